"""An interaction that was started is completed, however early its client leaves, and a 503 is only given
for rows that were not stored: while the interaction is being written (the INSERT waits on a lock), between
its commit and the stream's first byte, and when the intake deadline passes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import aiopg
import pytest
from aiohttp_sse import EventSourceResponse

from outbox.enqueue import OutboxWriter
from outbox.errors import DatabaseUnavailable
from service.app import create_app
from service.chat import interaction
from service.config import Config
from service.store.outbox_names import OUTBOX_NAMES
from service.target.rows import signal_event
from tests.helpers import fetch, finish_reason, probe, scalar, wait_for
from tests.test_ask_eco import SSE, serve

LOCK_INTAKE_SQL = "BEGIN; LOCK TABLE eco_outbox.events IN SHARE MODE"
INTAKE_WAITING_SQL = (
    "select count(*) from pg_stat_activity"
    " where wait_event_type = 'Lock' and query like '%%INSERT INTO eco_outbox.events%%'"
)


async def completed_with(db: aiopg.Pool) -> str | None:
    return await wait_for(lambda: finish_reason(db), lambda reason: reason is not None)


@pytest.fixture
async def intake_lock(database_url: str) -> AsyncIterator[aiopg.Cursor]:
    """A session that can hold every outbox INSERT back (SHARE blocks writers, not readers)."""
    async with aiopg.connect(database_url, enable_hstore=False) as conn, conn.cursor() as cur:
        yield cur


async def test_a_client_gone_while_its_interaction_is_written_completes_it(
    make_config: Callable[..., Config], db: aiopg.Pool, intake_lock: aiopg.Cursor
) -> None:
    app = create_app(make_config())
    async with serve(app, handler_cancellation=True) as url, aiohttp.ClientSession() as session:
        await intake_lock.execute(LOCK_INTAKE_SQL)
        asking = asyncio.create_task(session.post(url / "api/ask-eco", json={"message": "Olá"}, headers=SSE))
        await wait_for(lambda: scalar(db, INTAKE_WAITING_SQL), lambda waiting: waiting == 1)
        asking.cancel()
        # The handler was cancelled inside open(), and left the write to finish on its own.
        await wait_for(probe(lambda: len(interaction._BACKGROUND)), lambda pending: pending > 0)
        await intake_lock.execute("COMMIT")
        assert await completed_with(db) == "client_disconnect"
        await wait_for(probe(lambda: len(interaction._BACKGROUND)), lambda pending: pending == 0)


@pytest.mark.parametrize("gone", ["cancelled", "reset"])
async def test_a_client_gone_before_the_stream_starts_completes_it(
    make_config: Callable[..., Config], db: aiopg.Pool, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    """The interaction is committed; the client leaves before the response is prepared: the handler is
    cancelled there, or the first write finds the connection reset."""
    preparing = asyncio.Event()

    async def prepare_for_a_gone_client(self: EventSourceResponse, request: Any) -> None:
        preparing.set()
        if gone == "reset":
            raise ConnectionResetError("the client is gone")
        await asyncio.Event().wait()  # until the handler is cancelled

    monkeypatch.setattr(EventSourceResponse, "prepare", prepare_for_a_gone_client)
    app = create_app(make_config())
    async with serve(app, handler_cancellation=True) as url, aiohttp.ClientSession() as session:
        asking = asyncio.create_task(session.post(url / "api/ask-eco", json={"message": "Olá"}, headers=SSE))
        await asyncio.wait_for(preparing.wait(), timeout=10)
        asking.cancel()
        assert await completed_with(db) == "client_disconnect"


async def test_a_503_at_the_deadline_is_true_and_its_retry_is_a_normal_answer(
    db: aiopg.Pool, intake_lock: aiopg.Cursor
) -> None:
    """One flusher; the first request's INSERT waits on a lock, the second waits in the queue. Both outlive
    the deadline and get a 503: the first because its statement's own timeout cancelled it, the second
    because it never left the queue. Neither is stored, so once the lock goes both retries are new."""
    writer = OutboxWriter(db, OUTBOX_NAMES, flushers=1, timeout_s=0.3)
    await writer.start()
    try:
        first, second = signal_event(uuid.uuid4(), "a", {}), signal_event(uuid.uuid4(), "b", {})
        await intake_lock.execute(LOCK_INTAKE_SQL)
        answers = await asyncio.gather(
            writer.enqueue([first]), writer.enqueue([second]), return_exceptions=True
        )
        assert [type(answer) for answer in answers] == [DatabaseUnavailable, DatabaseUnavailable]
        await intake_lock.execute("COMMIT")
        assert await fetch(db, "select count(*) from eco_outbox.events") == [(0,)]
        [again_first] = await writer.enqueue([first])
        [again_second] = await writer.enqueue([second])
        assert (again_first.inserted, again_second.inserted) == (True, True)
    finally:
        await writer.close()


async def test_requests_waiting_for_a_connection_get_their_503_at_the_deadline_and_are_never_written(
    database_url: str, db: aiopg.Pool
) -> None:
    """The writer's only connection is held: the first request waits in a batch for it, the second (sent a
    round trip later, so with a later deadline) in the queue, a third arrives after those had their 503.
    Each gets its own at its deadline, none is stored, and once the connection is back their retries are
    new."""
    pool = await aiopg.create_pool(database_url, minsize=1, maxsize=1, enable_hstore=False)
    writer = OutboxWriter(pool, OUTBOX_NAMES, flushers=1, timeout_s=0.3)
    await writer.start()
    try:
        signals = [signal_event(uuid.uuid4(), name, {}) for name in ("a", "b", "c")]
        async with pool.acquire():
            first = asyncio.ensure_future(writer.enqueue(signals[:1]))
            await fetch(db, "select 1")
            second = asyncio.ensure_future(writer.enqueue(signals[1:2]))
            # A watchdog, not a timing: a request left without a deadline would wait for the connection.
            answers = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
            third = writer.enqueue(signals[2:])
            answers += await asyncio.wait_for(asyncio.gather(third, return_exceptions=True), 10)
            assert [type(answer) for answer in answers] == [DatabaseUnavailable] * 3
        assert await fetch(db, "select count(*) from eco_outbox.events") == [(0,)]
        again = [result for signal in signals for result in await writer.enqueue([signal])]
        assert [result.inserted for result in again] == [True] * 3
    finally:
        await writer.close()
        pool.close()
        await pool.wait_closed()
