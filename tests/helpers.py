"""Test helpers: polling until a deadline, reading SSE, querying the database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import aiopg

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
) -> T:
    """Poll `probe` until `done(value)`; fail with the last value once the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s; last value: {value!r}")
        await asyncio.sleep(interval_s)


def probe(get: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """Wrap a plain getter (an in-process count, a task set) for `wait_for`."""

    async def run() -> T:
        return get()

    return run


async def fetch(pool: aiopg.Pool, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall()) if cur.description else []


async def scalar(pool: aiopg.Pool, sql: str, params: Any = None) -> Any:
    rows = await fetch(pool, sql, params)
    return rows[0][0] if rows else None


# Every outbox row as `eco_outbox.events` held them before delivered rows moved to their log: the table's
# rows, and the log's as 'delivered' (their payload: the summary the log keeps). For tests that read a row's
# fate whichever table holds it: `f"select state from {OUTBOX_ROWS} where key = %s"`.
OUTBOX_ROWS = """(
    SELECT seq, kind, key, group_key, payload, dedupe_key, state, attempts, next_attempt_at, created_at,
           delivered_at, dead_at, last_error
    FROM eco_outbox.events
    UNION ALL
    SELECT seq, kind, key, group_key, summary, dedupe_key, 'delivered', attempts, NULL, created_at,
           delivered_at, NULL, NULL
    FROM eco_outbox.events_delivered
) AS outbox_rows"""


# A completion's finish reason: in its outbox row until it is delivered, then in its interaction's meta in the
# target (the log of delivered rows keeps nothing of a completion's payload). Without a group: the only one.
FINISH_REASON_SQL = """
SELECT coalesce(
    (SELECT payload->'meta'->>'finish_reason' FROM eco_outbox.events
     WHERE kind = 'interaction_completion' AND (%(group)s::uuid IS NULL OR group_key = %(group)s::uuid)),
    (SELECT i.meta->>'finish_reason' FROM eco_outbox.events_delivered AS d
     JOIN analytics.eco_interactions AS i ON i.id = d.key
     WHERE d.kind = 'interaction_completion' AND (%(group)s::uuid IS NULL OR d.group_key = %(group)s::uuid)))
"""


async def finish_reason(db: aiopg.Pool, group: str | None = None) -> str | None:
    """The finish reason of the interaction's completion (the only one without `group`), None before any."""
    return await scalar(db, FINISH_REASON_SQL, {"group": group})


async def insert_interaction(pool: aiopg.Pool, interaction_id: str) -> None:
    """Write a parent row straight into the target, as another writer (the ECO backend) would."""
    await fetch(pool, "insert into analytics.eco_interactions (id) values (%s)", (interaction_id,))


@dataclass
class SSEEvent:
    event: str
    id: str | None
    data: dict[str, Any]


async def read_sse(response: aiohttp.ClientResponse, *, until: str | None = "done") -> list[SSEEvent]:
    """Parse `text/event-stream` frames until the `until` event (or the end of the body)."""
    events: list[SSEEvent] = []
    async for event in iter_sse(response):
        events.append(event)
        if until is not None and event.event == until:
            break
    return events


async def iter_sse(response: aiohttp.ClientResponse):  # type: ignore[no-untyped-def]
    name, ident, data = "message", None, []
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(name, ident, json.loads("\n".join(data)))
            name, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                ident = value
            elif field == "data":
                data.append(value)
