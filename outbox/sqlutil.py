"""Transactions on aiopg's autocommit cursors that survive a dead connection quietly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiopg import Cursor

from outbox.sql import identifier


@asynccontextmanager
async def transaction(
    cur: Cursor, *, idle_timeout_ms: int = 0, first: str = "", params: Mapping[str, object] | None = None
) -> AsyncIterator[None]:
    """BEGIN, then COMMIT, or ROLLBACK on error, on an aiopg (autocommit) cursor.

    `idle_timeout_ms` bounds the time this transaction may sit idle (the server ends the session after it,
    releasing its locks): a client frozen mid-transaction cannot hold rows for longer. It rides in the
    BEGIN's round trip, and so does `first` (with `params`), the transaction's first statement, whose rows
    the cursor then holds: on a loaded machine each round trip costs milliseconds of scheduling.

    Not `cur.begin()`: when its BEGIN fails on a connection the server has dropped (a pooled connection
    after a database restart), aiopg's Transaction stays marked open and warns (ResourceWarning) when it is
    collected, long after and anywhere. Here the error is raised and nothing is left behind.
    """
    begin = "BEGIN"
    if idle_timeout_ms > 0:
        begin += f"; SET LOCAL idle_in_transaction_session_timeout = {int(idle_timeout_ms)}"
    if not first:
        await cur.execute(begin)
    try:
        if first:
            await cur.execute(f"{begin}; {first}", params)
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


async def execute_in_savepoint(cur: Cursor, name: str, sql: str, params: Mapping[str, object]) -> None:
    """`sql` under a savepoint set in the same round trip; on error, back to the savepoint, and the error
    raised. It is left for the end of the transaction (or of an enclosing savepoint) to release: a RELEASE
    would cost a round trip of its own. So run it a few times per transaction, never in a long loop."""
    name = identifier(name)
    try:
        await cur.execute(f"SAVEPOINT {name}; {sql}", params)
    except BaseException:
        if not cur.closed:
            await cur.execute(f"ROLLBACK TO SAVEPOINT {name}")
        raise
