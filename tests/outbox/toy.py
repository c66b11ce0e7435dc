"""A target of the engine's own tests: a parent table and a child table whose rows need their parent, with
nothing of ECO in them. Its deliverers are written as a composing service would write them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import aiopg
import psycopg2.errors
from aiopg import Cursor

from outbox.events import OutboxEvent
from outbox.names import OutboxNames
from outbox.sqlutil import savepoint
from outbox.target import PARENT_MISSING, DeliveryResult, Target
from tests.helpers import fetch

# The outbox the tests' databases hold (made by the engine's migrations under the service's names).
TOY_NAMES = OutboxNames(
    schema="eco_outbox", table="events", channel="eco_outbox", metric_prefix="eco_outbox_"
)

PARENT = "parent"
CHILD = "child"

SCHEMA_SQL = """
CREATE SCHEMA toy;
CREATE TABLE toy.parents (id uuid PRIMARY KEY, name text NOT NULL);
CREATE TABLE toy.children (
    id uuid PRIMARY KEY,
    parent_id uuid NOT NULL REFERENCES toy.parents (id),
    -- A rule of the target the outbox does not know: a long note is refused (23514).
    note text NOT NULL CHECK (length(note) <= 10)
);
"""

INSERT_PARENTS_SQL = """
INSERT INTO toy.parents (id, name)
SELECT id, name FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id uuid, name text)
ON CONFLICT (id) DO NOTHING
"""

INSERT_CHILDREN_SQL = """
WITH ready AS MATERIALIZED (
    SELECT r.* FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id uuid, parent_id uuid, note text)
    WHERE EXISTS (SELECT 1 FROM toy.parents p WHERE p.id = r.parent_id)
), inserted AS (
    INSERT INTO toy.children (id, parent_id, note) SELECT id, parent_id, note FROM ready
    ON CONFLICT (id) DO NOTHING
)
SELECT id::text FROM ready
"""


def _rows(payloads: Sequence[str]) -> str:
    return "[" + ",".join(payloads) + "]"


async def deliver_parents(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    await cur.execute(INSERT_PARENTS_SQL, {"rows": _rows(payloads)})
    return DeliveryResult(delivered=set(keys))


async def deliver_children(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    try:
        async with savepoint(cur, "children"):
            await cur.execute(INSERT_CHILDREN_SQL, {"rows": _rows(payloads)})
            written = {row[0] for row in await cur.fetchall()}
    except psycopg2.errors.ForeignKeyViolation:
        return DeliveryResult(held={key: "fk_violation" for key in keys})
    return DeliveryResult(delivered=written, held={key: PARENT_MISSING for key in keys if key not in written})


TOY_TARGET = Target(
    deliverers={PARENT: deliver_parents, CHILD: deliver_children},
    waits_on={CHILD: frozenset({PARENT})},
)


async def create_toy_tables(pool: aiopg.Pool) -> None:
    await fetch(pool, SCHEMA_SQL)


def parent_event(parent_id: uuid.UUID, name: str) -> OutboxEvent:
    return OutboxEvent(PARENT, parent_id, parent_id, {"id": str(parent_id), "name": name})


def child_event(parent_id: uuid.UUID, note: str, child_id: uuid.UUID | None = None) -> OutboxEvent:
    key = child_id or uuid.uuid4()
    return OutboxEvent(CHILD, key, parent_id, {"id": str(key), "parent_id": str(parent_id), "note": note})
