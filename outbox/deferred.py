"""Writes that must not be lost to a short outage (for example the completion of a stream that has
already started and cannot answer 503. They are held in memory, oldest first, and retried while the
process lives; the queue is bounded (the oldest batch goes first, counted), and shutdown flushes it.

Retrying is safe because every event is keyed by its target row's id: a batch that committed but whose
answer was lost is a no-op the second time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from loguru import logger

from outbox.background import BackgroundTask
from outbox.enqueue import OutboxWriter
from outbox.errors import CONNECTION_ERRORS, DatabaseUnavailable
from outbox.events import OutboxEvent
from outbox.metrics import outbox_metrics

# What says "the outbox is unreachable now, try again later" (TimeoutError is among CONNECTION_ERRORS).
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *CONNECTION_ERRORS)
# On shutdown the held rows are retried this often (a pool may first hand out connections the outage broke).
SHUTDOWN_RETRY_S = 0.1


class DeferredWrites(BackgroundTask):
    """Retries held batches every `retry_s` until each commits; holds at most `max_rows` rows."""

    task_name = "outbox-deferred"

    def __init__(self, writer: OutboxWriter, *, max_rows: int, retry_s: float) -> None:
        super().__init__(writer.names)
        self._writer = writer
        metrics = outbox_metrics(writer.names)
        self._rows_gauge, self._dropped = metrics.deferred_rows, metrics.deferred_dropped
        self._max_rows = max_rows
        self._retry_s = retry_s
        self._batches: deque[Sequence[OutboxEvent]] = deque()
        self._rows = 0
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        """Rows held, waiting for the outbox."""
        return self._rows

    async def write(self, events: Sequence[OutboxEvent]) -> bool:
        """Commit `events` now if the outbox answers (True), else hold them for a retry (False)."""
        try:
            await self._writer.enqueue(events)
        except RETRYABLE_ERRORS as exc:
            logger.bind(code="db_unavailable").warning(
                "outbox unreachable, {} rows held: {}", len(events), exc
            )
            self._hold(events)
            return False
        return True

    def _hold(self, events: Sequence[OutboxEvent]) -> None:
        self._batches.append(events)
        self._rows += len(events)
        while self._rows > self._max_rows and self._batches:
            dropped = self._batches.popleft()
            self._rows -= len(dropped)
            self._dropped.inc(len(dropped))
            logger.bind(code="deferred_dropped", group_key=str(dropped[0].group_key)).error(
                "deferred queue full: dropped {} rows", len(dropped)
            )
        self._rows_gauge.set(self._rows)

    async def flush(self) -> bool:
        """Write the held batches in order; stops at the first that meets the outbox still down."""
        async with self._lock:
            while self._batches:
                try:
                    await self._writer.enqueue(self._batches[0])
                except RETRYABLE_ERRORS:
                    return False
                self._rows -= len(self._batches.popleft())
                self._rows_gauge.set(self._rows)
            return True

    async def close(self, timeout_s: float) -> None:
        """On shutdown: stop retrying, then give the held rows one last `timeout_s` to land; what is still
        held after that is lost with the process, so it is counted and logged."""
        await self.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._batches and loop.time() < deadline:
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    if await self.flush():
                        break
                    await asyncio.sleep(SHUTDOWN_RETRY_S)
            except TimeoutError:
                break
        if self._batches:
            self._dropped.inc(self._rows)
            logger.bind(code="deferred_dropped").error(
                "shutdown: {} held rows never reached the outbox", self._rows
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._retry_s)
            if self._batches and await self.flush():
                logger.info("deferred outbox rows written")
