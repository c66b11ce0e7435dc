"""Statements that ride in another's round trip (outbox.sqlutil): the BEGIN with the transaction's first
statement, a SAVEPOINT with the statement it guards. Each must keep what the separate statements gave."""

from __future__ import annotations

import uuid

import aiopg
import psycopg2.errors
import pytest

from outbox.sqlutil import execute_in_savepoint, transaction
from tests.helpers import scalar

INSERT_PARENT = "insert into analytics.eco_interactions (id) values (%(id)s) returning id::text"
INSERT_SIGNAL = (
    "insert into analytics.eco_passive_signals (id, interaction_id, signal, meta)"
    " values (gen_random_uuid(), %(id)s, 'sqlutil', '{}') returning id::text"
)


async def test_the_first_statement_rides_in_the_begin_and_its_rows_are_read(db: aiopg.Pool) -> None:
    parent = str(uuid.uuid4())
    async with db.acquire() as conn, conn.cursor() as cur:
        async with transaction(cur, idle_timeout_ms=5000, first=INSERT_PARENT, params={"id": parent}):
            assert await cur.fetchall() == [(parent,)]
            await cur.execute("show idle_in_transaction_session_timeout")
            assert await cur.fetchall() == [("5s",)]
    assert await scalar(db, "select count(*) from analytics.eco_interactions where id = %s", (parent,)) == 1


async def test_a_failing_first_statement_rolls_the_transaction_back(db: aiopg.Pool) -> None:
    async with db.acquire() as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.ForeignKeyViolation):
            async with transaction(cur, first=INSERT_SIGNAL, params={"id": str(uuid.uuid4())}):
                pass
        # The session is out of the failed transaction: a new statement runs.
        await cur.execute("select 1")
        assert await cur.fetchall() == [(1,)]


async def test_a_statement_refused_in_its_savepoint_leaves_the_rest_of_the_transaction(
    db: aiopg.Pool,
) -> None:
    parent = str(uuid.uuid4())
    async with db.acquire() as conn, conn.cursor() as cur:
        async with transaction(cur):
            await cur.execute(INSERT_PARENT, {"id": parent})
            await execute_in_savepoint(cur, "first", INSERT_SIGNAL, {"id": parent})
            assert len(await cur.fetchall()) == 1
            with pytest.raises(psycopg2.errors.ForeignKeyViolation):
                await execute_in_savepoint(cur, "second", INSERT_SIGNAL, {"id": str(uuid.uuid4())})
    assert await scalar(db, "select count(*) from analytics.eco_interactions where id = %s", (parent,)) == 1
    assert (
        await scalar(db, "select count(*) from analytics.eco_passive_signals where signal = 'sqlutil'") == 1
    )
