"""Enqueue with group commit: concurrent callers share one multi-row INSERT, each answered after its COMMIT.

One INSERT per request caps intake at the database's commit rate; gathering the requests that arrive while a
commit is in flight into the next statement lifts it to what one process can parse and answer.

The answer says what was stored. A caller's deadline drops its request while it waits in the queue (never
written: a 503, and a retry is new); once its rows are sent, the statement's outcome answers it, and that
statement runs under a `statement_timeout` of the same length, so the outcome comes soon: committed, or
cancelled by the server (not committed). A 503 is never given for rows that were stored.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import aiopg
import psycopg2
from loguru import logger

from outbox.background import LoopHealth, cancel_and_wait, supervise
from outbox.errors import CONNECTION_ERRORS, DatabaseUnavailable, describe, server_cancelled
from outbox.events import EnqueueResult, OutboxEvent
from outbox.metrics import outbox_metrics
from outbox.names import OutboxNames
from outbox.queries import queries

# Built once: json.dumps given options builds an encoder per call.
_PAYLOAD_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_payload(payload: dict[str, object]) -> str:
    return _PAYLOAD_JSON.encode(payload)


@dataclass(slots=True)
class _Request:
    events: Sequence[OutboxEvent]
    future: asyncio.Future[list[EnqueueResult]]
    # Loop time past which, still unsent, it is answered DatabaseUnavailable and never written.
    deadline: float
    # Set when its rows go to the database: from then on only the statement's outcome answers it.
    sent: bool = False


class OutboxWriter:
    """Gathers concurrent enqueue calls into batches of at most `max_rows` rows.

    A batch is sent as soon as the previous one has committed (natural batching: no added latency when the
    service is idle); `wait_ms` may add a short wait to gather more rows under load. `flushers` batches may
    be in flight at once. A caller still queued after `timeout_s` gets DatabaseUnavailable (a 503) and its
    rows are not written; one whose rows were sent gets its statement's outcome, within `timeout_s` more.

    The deadlines share one timer: requests wait in arrival order with the same timeout, so the oldest
    unsent one is always the next to expire, and a timer per request (set and cancelled thousands of
    times a second) would only repeat it.
    """

    def __init__(
        self,
        pool: aiopg.Pool,
        names: OutboxNames,
        *,
        max_rows: int = 500,
        wait_ms: float = 0.0,
        flushers: int = 2,
        timeout_s: float = 15.0,
    ) -> None:
        self._pool = pool
        self.names = names
        sql = queries(names)
        self._insert_events = sql["insert_events"]
        self._inserted_again = sql["inserted_again"]
        self._existing_events = sql["existing_events"]
        self._max_rows = max_rows
        self._wait_s = wait_ms / 1000
        self._flushers = flushers
        self._timeout_s = timeout_s
        self._statement_timeout_ms = max(1, round(timeout_s * 1000))
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        # Requests not sent yet (queued, or in a batch waiting for a connection), oldest first.
        self._unsent: deque[_Request] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.loops: list[LoopHealth] = []

    async def start(self) -> None:
        self.loops = [LoopHealth(f"outbox-writer-{i}") for i in range(self._flushers)]
        self._tasks = [
            asyncio.create_task(
                supervise(health, self._flush_loop, outbox_metrics(self.names).loop_restarts),
                name=health.name,
            )
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
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def enqueue(self, events: Sequence[OutboxEvent]) -> list[EnqueueResult]:
        """Commit `events` to the outbox; returns once they are durable, in the order given."""
        if not self._tasks:
            raise RuntimeError("OutboxWriter.start() was not called")
        loop = asyncio.get_running_loop()
        request = _Request(events, loop.create_future(), loop.time() + self._timeout_s)
        self._queue.put_nowait(request)
        self._unsent.append(request)
        if self._expiry is None:
            self._expiry = loop.call_at(request.deadline, self._expire)
        # Awaited unshielded: a caller that goes away cancels it, and a flusher skips it if not sent yet;
        # rows already sent are written, or not, as the statement goes.
        return await request.future

    def _expire(self) -> None:
        """Answer the unsent requests whose deadline has passed, then wait for the next one's. Being unsent,
        they are never written: the 503 is true, and a retry is a new request."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        unsent = self._unsent
        expired = 0
        while unsent:
            request = unsent[0]
            if not request.sent and not request.future.done():
                if request.deadline > now:
                    self._expiry = loop.call_at(request.deadline, self._expire)
                    break
                request.future.set_exception(
                    DatabaseUnavailable(f"outbox enqueue outlived {self._timeout_s} s")
                )
                expired += 1
            unsent.popleft()
        if expired:
            logger.bind(code="enqueue_timeout").warning(
                "{} outbox enqueues outlived {} s", expired, self._timeout_s
            )

    def _forget_sent(self) -> None:
        """Drop the answered and the sent from the front of the unsent: they need no deadline."""
        unsent = self._unsent
        while unsent and (unsent[0].sent or unsent[0].future.done()):
            unsent.popleft()

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
                for request in batch:
                    # Settled already, unless this flusher was cancelled mid-batch (shutdown).
                    _settle(request, exception=DatabaseUnavailable("the outbox writer stopped"))
                    self._queue.task_done()

    async def _flush(self, batch: list[_Request]) -> None:
        live = [request for request in batch if not request.future.done()]
        if not live:
            return
        try:
            inserted = await self._insert_retrying(live)
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
                    EnqueueResult(event, (str(event.kind), event.key_text) in inserted)
                    for event in request.events
                ],
            )

    async def _insert_retrying(self, requests: list[_Request]) -> set[tuple[str, str]]:
        """A connection lost mid-statement leaves the commit unknown (a terminate that lands as the INSERT
        commits still fails it): answering 503 for rows that were stored would be a lie, so try once more,
        on fresh connections (the dead ones are dropped first), idempotently. A server's cancel needs no
        second try: the statement did not commit."""
        try:
            return await self._insert(requests)
        except CONNECTION_ERRORS as exc:
            sent = [request for request in requests if request.sent]
            if not sent:
                raise
            error = describe(exc)
        logger.bind(code="db_unavailable").warning("outbox insert failed, trying once more: {}", error)
        await self._pool.clear()
        return await self._insert(sent, retried=True)

    async def _insert(self, requests: list[_Request], *, retried: bool = False) -> set[tuple[str, str]]:
        async with self._pool.acquire() as conn, conn.cursor() as cur:
            if not retried:
                # Waiting for a connection may have outlived some deadlines: those callers had their 503.
                requests = [request for request in requests if not request.future.done()]
                for request in requests:
                    request.sent = True
                self._forget_sent()
            events = [event for request in requests for event in request.events]
            if not events:
                return set()
            params = dict(
                kinds=[str(event.kind) for event in events],
                keys=[event.key_text for event in events],
                group_keys=[str(event.group_key) for event in events],
                payloads=[encode_payload(event.payload) for event in events],
                dedupe_keys=[event.dedupe_key for event in events],
            )
            # One round trip and one implicit transaction, which SET LOCAL holds for; the rows come from the
            # last statement, which takes out a key delivered while the INSERT ran.
            await cur.execute(
                f"SET LOCAL statement_timeout = {self._statement_timeout_ms}; {self._insert_events.sql};"
                f" {self._inserted_again.sql}",
                params,
            )
            rows = await cur.fetchall()
            if retried:
                # What the first try committed conflicts now: its rows count as inserted by this request.
                await cur.execute(self._existing_events.sql, dict(kinds=params["kinds"], keys=params["keys"]))
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
