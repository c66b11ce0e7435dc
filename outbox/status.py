"""Where one interaction's events are on their way to the target: pending, delivered or dead, and how many
attempts each took. Clients watch this to see their signals land; rows purged after retention are gone.

The read goes through events_interaction_idx (sql/006) and is bounded, so that it costs one interaction's rows
whatever the outbox retains."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import aiopg
from sqlalchemy import bindparam, select

from outbox.events import Kind
from outbox.sqlutil import compile_statement
from outbox.tables import events

EVENTS_OF_INTERACTION = compile_statement(
    select(
        events.c.kind,
        events.c.key,
        events.c.payload["signal"].astext.label("name"),
        events.c.payload["meta"]["type"].astext.label("type"),
        events.c.state,
        events.c.attempts,
        events.c.created_at,
        events.c.delivered_at,
        events.c.dead_at,
        events.c.last_error,
    )
    .where(events.c.interaction_id == bindparam("interaction_id"))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True)
class EventStatus:
    kind: str
    key: str
    name: str | None
    type: str | None
    state: str
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class InteractionStatus:
    """The interaction's own rows (created, completed) and its signals, oldest first."""

    interaction: list[EventStatus]
    signals: list[EventStatus]
    # More rows exist than `max_rows`: the oldest are listed.
    truncated: bool


async def interaction_status(pool: aiopg.Pool, interaction_id: uuid.UUID, max_rows: int) -> InteractionStatus:
    """The interaction's first `max_rows` outbox rows, oldest first."""
    params = EVENTS_OF_INTERACTION.bind(interaction_id=str(interaction_id), limit=max_rows + 1)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(EVENTS_OF_INTERACTION.sql, params)
        rows = [EventStatus(*row) for row in await cur.fetchall()]
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return InteractionStatus(
        interaction=[row for row in rows if row.kind != Kind.SIGNAL],
        signals=[row for row in rows if row.kind == Kind.SIGNAL],
        truncated=truncated,
    )
