"""What operators ask of the outbox: counts, the dead letters, and requeueing them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiopg

from outbox.names import OutboxNames
from outbox.queries import queries
from outbox.sqlutil import transaction


@dataclass(frozen=True)
class KindStats:
    kind: str
    state: str
    rows: int
    oldest_age_s: float


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    kind: str
    key: str
    group_key: str
    attempts: int
    created_at: datetime
    dead_at: datetime | None
    last_error: str | None
    payload: dict[str, Any]


async def stats(pool: aiopg.Pool, names: OutboxNames) -> list[KindStats]:
    """Pending and dead rows by kind (delivered rows are counted by the relay's metrics instead)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        statement = queries(names)["stats"]
        await cur.execute(statement.sql)
        return [KindStats(kind, state, rows, age or 0.0) for kind, state, rows, age in await cur.fetchall()]


async def list_dead(
    pool: aiopg.Pool, names: OutboxNames, *, limit: int = 100, after_seq: int = 0
) -> list[DeadLetter]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        statement = queries(names)["list_dead"]
        await cur.execute(statement.sql, dict(limit=limit, after_seq=after_seq))
        return [DeadLetter(*row) for row in await cur.fetchall()]


async def requeue(pool: aiopg.Pool, names: OutboxNames, seqs: list[int] | None = None) -> list[int]:
    """Put dead rows (all, or those in `seqs`) back in the queue, due now, with their attempts reset."""
    sql = queries(names)
    statement = sql["requeue_all"] if seqs is None else sql["requeue_seqs"]
    params = None if seqs is None else {"seqs": seqs}
    async with pool.acquire() as conn, conn.cursor() as cur:
        async with transaction(cur):
            await cur.execute(statement.sql, params)
            requeued = [row[0] for row in await cur.fetchall()]
            if requeued:
                await cur.execute(sql["notify"].sql)
    return sorted(requeued)


async def purge_dead(pool: aiopg.Pool, names: OutboxNames, older_than_s: float) -> int:
    """Delete dead letters that died more than `older_than_s` ago: the explicit end of a dead letter."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        statement = queries(names)["purge_dead"]
        await cur.execute(statement.sql, dict(older_than_s=older_than_s))
        return len(await cur.fetchall())
