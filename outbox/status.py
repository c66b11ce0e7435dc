"""Where one group's events are on their way to the target: pending, delivered or dead, and how many
attempts each took. Delivered rows are read from the log of delivered rows (and, marked by a previous
release, from the table); rows purged after retention are gone. The read is bounded, so that it costs one
group's rows whatever the outbox retains."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiopg

from outbox.names import OutboxNames
from outbox.queries import queries


@dataclass(frozen=True)
class EventStatus:
    kind: str
    key: str
    payload: dict[str, Any]
    state: str
    attempts: int
    created_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    last_error: str | None
    # A delivered row read from the log: `payload` holds only the target's status fields, by dotted path.
    summarized: bool = False

    def field(self, path: str) -> Any:
        """The payload's value at a dotted path (one of the target's status fields), or None."""
        if self.summarized:
            return self.payload.get(path)
        value: Any = self.payload
        for part in path.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value


@dataclass(frozen=True)
class GroupStatus:
    """The group's rows, oldest first."""

    events: list[EventStatus]
    # More rows exist than `max_rows`: the oldest are listed.
    truncated: bool


async def group_status(
    pool: aiopg.Pool, names: OutboxNames, group_key: uuid.UUID, max_rows: int
) -> GroupStatus:
    """The group's first `max_rows` outbox rows, oldest first."""
    statement = queries(names)["events_of_group"]
    params = dict(group_key=str(group_key), limit=max_rows + 1)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(statement.sql, params)
        rows = [EventStatus(*row) for row in await cur.fetchall()]
    return GroupStatus(events=rows[:max_rows], truncated=len(rows) > max_rows)
