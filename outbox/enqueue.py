"""Enqueue with group commit: concurrent callers share one multi-row INSERT, each answered after its COMMIT.

One INSERT per request caps intake at the database's commit rate; gathering the requests that arrive while a
commit is in flight into the next statement lifts it to what one process can parse and answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiopg
import psycopg2
from loguru import logger

from outbox.background import LoopHealth, cancel_and_wait, supervise
from outbox.errors import CONNECTION_ERRORS, DatabaseUnavailable, describe, server_cancelled
from outbox.events import EnqueueResult, OutboxEvent
from outbox.queries import EXISTING_EVENTS, INSERT_EVENTS


def encode_payload(payload: dict[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass
class _Request:
    events: Sequence[OutboxEvent]
    future: asyncio.Future[list[EnqueueResult]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OutboxWriter:
    """Gathers concurrent enqueue calls into batches of at most `max_rows` rows.

    A batch is sent as soon as the previous one has committed (natural batching: no added latency when the
    service is idle); `wait_ms` may add a short wait to gather more rows under load. `flushers` batches may
    be in flight at once. No caller waits longer than `timeout_s`: it gets DatabaseUnavailable (a 503).
    """

    def __init__(
        self,
        pool: aiopg.Pool,
        *,
        max_rows: int = 500,
        wait_ms: float = 0.0,
        flushers: int = 2,
        timeout_s: float = 15.0,
    ) -> None:
        self._pool = pool
        self._max_rows = max_rows
        self._wait_s = wait_ms / 1000
        self._flushers = flushers
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.loops: list[LoopHealth] = []

    async def start(self) -> None:
        self.loops = [LoopHealth(f"outbox-writer-{i}") for i in range(self._flushers)]
        self._tasks = [
            asyncio.create_task(supervise(health, self._flush_loop), name=health.name)
            for health in self.loops
        ]

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def close(self) -> None:
        """Finish what is queued, then stop: a request already waiting gets its answer."""
        await self._queue.join()
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []

    async def enqueue(self, events: Sequence[OutboxEvent]) -> list[EnqueueResult]:
        """Commit `events` to the outbox; returns once they are durable, in the order given."""
        if not self._tasks:
            raise RuntimeError("OutboxWriter.start() was not called")
        request = _Request(events)
        self._queue.put_nowait(request)
        try:
            # The timeout cancels the future: a flusher that has not taken it yet skips it, so a request
            # answered 503 is not written (one already in flight may be; a retry with its id is a no-op).
            async with asyncio.timeout(self._timeout_s):
                return await request.future
        except TimeoutError:
            logger.bind(code="enqueue_timeout").warning("outbox enqueue outlived {} s", self._timeout_s)
            raise DatabaseUnavailable(f"outbox enqueue outlived {self._timeout_s} s") from None

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            rows = len(batch[0].events)
            deadline = loop.time() + self._wait_s
            while rows < self._max_rows:
                try:
                    request = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            request = await self._queue.get()
                    except TimeoutError:
                        break
                batch.append(request)
                rows += len(request.events)
            try:
                await self._flush(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _flush(self, batch: list[_Request]) -> None:
        live = [request for request in batch if not request.future.done()]
        if not live:
            return
        try:
            inserted = await self._insert_retrying([event for request in live for event in request.events])
        except asyncio.CancelledError as exc:
            # pg_cancel_backend or statement_timeout, which aiopg raises as CancelledError, twice: the INSERT
            # did not commit; these callers get a 503, and this flusher goes on.
            if not server_cancelled(exc):
                raise
            logger.bind(code="57014").warning("outbox insert cancelled by the server: {}", describe(exc))
            for request in live:
                _settle(request, exception=DatabaseUnavailable(describe(exc)))
            return
        except CONNECTION_ERRORS as exc:
            logger.bind(code="db_unavailable").warning("outbox insert failed: {}", exc)
            for request in live:
                _settle(request, exception=DatabaseUnavailable(str(exc)))
            return
        except Exception as exc:
            if len(live) == 1:
                code = exc.pgcode if isinstance(exc, psycopg2.Error) and exc.pgcode else "db_error"
                logger.bind(code=code).error("outbox insert rejected: {}", exc)
                _settle(live[0], exception=exc)
                return
            # One bad row must not fail its neighbours: retry each request on its own.
            for request in live:
                await self._flush([request])
            return
        for request in live:
            _settle(
                request,
                result=[
                    EnqueueResult(event, (str(event.kind), str(event.key)) in inserted)
                    for event in request.events
                ],
            )

    async def _insert_retrying(self, events: list[OutboxEvent]) -> set[tuple[str, str]]:
        """A connection lost mid-statement leaves the commit unknown (a terminate that lands as the INSERT
        commits still fails it): answering 503 for rows that were stored would be a lie, so try once more,
        on fresh connections (the dead ones are dropped first), idempotently."""
        try:
            return await self._insert(events)
        except asyncio.CancelledError as exc:
            if not server_cancelled(exc):
                raise
            error = describe(exc)
        except CONNECTION_ERRORS as exc:
            error = describe(exc)
        logger.bind(code="db_unavailable").warning("outbox insert failed, trying once more: {}", error)
        await self._pool.clear()
        return await self._insert(events, retried=True)

    async def _insert(self, events: list[OutboxEvent], *, retried: bool = False) -> set[tuple[str, str]]:
        params = INSERT_EVENTS.bind(
            kinds=[str(event.kind) for event in events],
            keys=[str(event.key) for event in events],
            group_keys=[str(event.group_key) for event in events],
            payloads=[encode_payload(event.payload) for event in events],
            dedupe_keys=[event.dedupe_key for event in events],
        )
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(INSERT_EVENTS.sql, params)
            rows = await cur.fetchall()
            if retried:
                # What the first try committed conflicts now: its rows count as inserted by this request.
                await cur.execute(
                    EXISTING_EVENTS.sql, EXISTING_EVENTS.bind(kinds=params["kinds"], keys=params["keys"])
                )
                rows += await cur.fetchall()
        return {(kind, key) for kind, key in rows}


def _settle(
    request: _Request,
    *,
    result: list[EnqueueResult] | None = None,
    exception: BaseException | None = None,
) -> None:
    if request.future.done():
        return
    if exception is not None:
        request.future.set_exception(exception)
    else:
        request.future.set_result(result or [])
