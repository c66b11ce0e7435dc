"""What operators ask of the outbox: counts, the dead letters, and requeueing them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiopg
from sqlalchemy import (
    Float,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    union_all,
    update,
)

from outbox.sqlutil import compile_statement, transaction
from outbox.tables import CHANNEL, DEAD, PENDING, events


def _stats_of(state: str) -> Select:
    return (
        select(
            events.c.kind,
            literal(state).label("state"),
            func.count().label("rows"),
            func.extract("epoch", func.now() - func.min(events.c.created_at))
            .cast(Float)
            .label("oldest_age_s"),
        )
        .where(events.c.state == state)
        .group_by(events.c.kind)
    )


# One branch per state, each read through its own partial index (events_due_idx, events_dead_idx), so a
# scrape costs the pending and dead rows only; `state IN (...)` can use neither and scans every retained row.
_stats = union_all(_stats_of(PENDING), _stats_of(DEAD)).subquery()
STATS = compile_statement(select(_stats).order_by(_stats.c.kind, _stats.c.state))

LIST_DEAD = compile_statement(
    select(
        events.c.seq,
        events.c.kind,
        cast(events.c.key, Text),
        cast(events.c.interaction_id, Text),
        events.c.attempts,
        events.c.created_at,
        events.c.dead_at,
        events.c.last_error,
        events.c.payload,
    )
    .where(events.c.state == DEAD, events.c.seq > bindparam("after_seq", type_=Integer))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)

_requeue = (
    update(events)
    .values(state=PENDING, attempts=0, next_attempt_at=func.now(), dead_at=None, last_error=None)
    .returning(events.c.seq)
)
REQUEUE_ALL = compile_statement(_requeue.where(events.c.state == DEAD))
REQUEUE_SEQS = compile_statement(
    _requeue.where(and_(events.c.state == DEAD, events.c.seq == func.any(bindparam("seqs"))))
)
NOTIFY = compile_statement(select(func.pg_notify(literal_column(f"'{CHANNEL}'"), "")))


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
    interaction_id: str
    attempts: int
    created_at: datetime
    dead_at: datetime | None
    last_error: str | None
    payload: dict[str, Any]


async def stats(pool: aiopg.Pool) -> list[KindStats]:
    """Pending and dead rows by kind (delivered rows are counted by the relay's metrics instead)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(STATS.sql, STATS.params)
        return [KindStats(kind, state, rows, age or 0.0) for kind, state, rows, age in await cur.fetchall()]


async def list_dead(pool: aiopg.Pool, *, limit: int = 100, after_seq: int = 0) -> list[DeadLetter]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(LIST_DEAD.sql, LIST_DEAD.bind(limit=limit, after_seq=after_seq))
        return [DeadLetter(*row) for row in await cur.fetchall()]


async def requeue(pool: aiopg.Pool, seqs: list[int] | None = None) -> list[int]:
    """Put dead rows (all, or those in `seqs`) back in the queue, due now, with their attempts reset."""
    statement = REQUEUE_ALL if seqs is None else REQUEUE_SEQS
    params = statement.params if seqs is None else statement.bind(seqs=seqs)
    async with pool.acquire() as conn, conn.cursor() as cur:
        async with transaction(cur):
            await cur.execute(statement.sql, params)
            requeued = [row[0] for row in await cur.fetchall()]
            if requeued:
                await cur.execute(NOTIFY.sql, NOTIFY.params)
    return sorted(requeued)


PURGE_DEAD_SQL = f"""
DELETE FROM eco_outbox.events
WHERE state = '{DEAD}' AND dead_at < now() - %(older_than_s)s * interval '1 second'
RETURNING seq
"""


async def purge_dead(pool: aiopg.Pool, older_than_s: float) -> int:
    """Delete dead letters that died more than `older_than_s` ago: the explicit end of a dead letter."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(PURGE_DEAD_SQL, {"older_than_s": older_than_s})
        return len(await cur.fetchall())
