"""Transactions on aiopg's autocommit cursors that survive a dead connection quietly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiopg import Cursor

from outbox.sql import identifier


@asynccontextmanager
async def transaction(cur: Cursor, *, idle_timeout_ms: int = 0) -> AsyncIterator[None]:
    """BEGIN, then COMMIT, or ROLLBACK on error, on an aiopg (autocommit) cursor.

    `idle_timeout_ms` bounds the time this transaction may sit idle (the server ends the session after it,
    releasing its locks): a client frozen mid-transaction cannot hold rows for longer. It rides in the
    BEGIN's round trip.

    Not `cur.begin()`: when its BEGIN fails on a connection the server has dropped (a pooled connection
    after a database restart), aiopg's Transaction stays marked open and warns (ResourceWarning) when it is
    collected, long after and anywhere. Here the error is raised and nothing is left behind.
    """
    if idle_timeout_ms > 0:
        await cur.execute(f"BEGIN; SET LOCAL idle_in_transaction_session_timeout = {int(idle_timeout_ms)}")
    else:
        await cur.execute("BEGIN")
    try:
        yield
    except BaseException:
        if not cur.closed:
            await cur.execute("ROLLBACK")
        raise
    await cur.execute("COMMIT")


@asynccontextmanager
async def savepoint(cur: Cursor, name: str) -> AsyncIterator[None]:
    """A nested transaction inside `transaction()`: an error undoes only what ran inside it. `name` is put
    into the statement, so it must be a plain identifier."""
    name = identifier(name)
    await cur.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if not cur.closed:
            await cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
        raise
    await cur.execute(f"RELEASE SAVEPOINT {name}")
