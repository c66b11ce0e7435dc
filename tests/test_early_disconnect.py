"""An interaction that was started is completed, however early its client leaves, and a 503 is only given
for rows that were not stored: while the interaction is being written (the INSERT waits on a lock), between
its commit and the stream's first byte, and when the intake deadline passes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiopg
import pytest

from outbox.enqueue import OutboxWriter
from outbox.errors import DatabaseUnavailable
from service.target.rows import signal_event
from tests.helpers import fetch

LOCK_INTAKE_SQL = "BEGIN; LOCK TABLE eco_outbox.events IN SHARE MODE"
INTAKE_WAITING_SQL = (
    "select count(*) from pg_stat_activity"
    " where wait_event_type = 'Lock' and query like '%%INSERT INTO eco_outbox.events%%'"
)
COMPLETION_SQL = (
    "select payload->'meta'->>'finish_reason' from eco_outbox.events where kind = 'interaction_completion'"
)


@pytest.fixture
async def intake_lock(database_url: str) -> AsyncIterator[aiopg.Cursor]:
    """A session that can hold every outbox INSERT back (SHARE blocks writers, not readers)."""
    async with aiopg.connect(database_url, enable_hstore=False) as conn, conn.cursor() as cur:
        yield cur


async def test_a_503_at_the_deadline_is_true_and_its_retry_is_a_normal_answer(
    db: aiopg.Pool, intake_lock: aiopg.Cursor
) -> None:
    """One flusher; the first request's INSERT waits on a lock, the second waits in the queue. Both outlive
    the deadline and get a 503: the first because its statement's own timeout cancelled it, the second
    because it never left the queue. Neither is stored, so once the lock goes both retries are new."""
    writer = OutboxWriter(db, flushers=1, timeout_s=0.3)
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
