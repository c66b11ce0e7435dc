"""Set-based writes to the target tables: one statement per kind and batch, idempotent on the rows' ids.

The target may be another server than the outbox, so there is no shared transaction: a batch written here
and not yet marked in the outbox is written again after a crash, and ON CONFLICT makes that a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg2.errors
from aiopg import Cursor

from outbox.sqlutil import savepoint
from outbox.target import PARENT_MISSING, DeliveryResult, Target
from service.target.rows import INTERACTION_COLUMNS, Kind

# The interaction's columns, as jsonb_to_recordset reads them and as the INSERTs list them.
_RECORD = ", ".join(f"{name} {sql_type}" for name, sql_type in INTERACTION_COLUMNS.items())
_NAMES = ", ".join(INTERACTION_COLUMNS)
_VALUES = ", ".join("coalesce(meta, '{}'::jsonb)" if name == "meta" else name for name in INTERACTION_COLUMNS)

INSERT_INTERACTIONS_SQL = f"""
INSERT INTO analytics.eco_interactions ({_NAMES})
SELECT {_VALUES}
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r({_RECORD})
ON CONFLICT DO NOTHING
RETURNING id::text
"""

# Run as a statement of its own: see deliver_interactions.
EXISTING_INTERACTIONS_SQL = """
SELECT id::text FROM analytics.eco_interactions WHERE id = ANY(CAST(%(ids)s AS uuid[]))
"""

# A completion may reach the target before its creation (another relay holds that row): it then inserts the
# whole row, and the creation's DO NOTHING keeps it.
UPSERT_COMPLETIONS_SQL = f"""
INSERT INTO analytics.eco_interactions ({_NAMES})
SELECT {_VALUES}
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r({_RECORD})
ON CONFLICT (id) DO UPDATE SET
    tokens_in = excluded.tokens_in,
    tokens_out = excluded.tokens_out,
    latency_ms = excluded.latency_ms,
    meta = analytics.eco_interactions.meta || excluded.meta
RETURNING id::text
"""

# Only signals whose parent exists are written; the rest wait in the outbox. Those that were written before
# (a re-delivery) count as delivered too.
INSERT_SIGNALS_SQL = """
WITH ready AS MATERIALIZED (
    SELECT r.* FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS r(id uuid, created_at timestamptz, interaction_id uuid, signal text, meta jsonb)
    WHERE EXISTS (SELECT 1 FROM analytics.eco_interactions i WHERE i.id = r.interaction_id)
), inserted AS (
    INSERT INTO analytics.eco_passive_signals (id, created_at, interaction_id, signal, meta)
    SELECT id, created_at, interaction_id, signal, coalesce(meta, '{}'::jsonb) FROM ready
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id::text FROM ready
"""


def _rows_json(payloads: Sequence[str]) -> str:
    return "[" + ",".join(payloads) + "]"


async def deliver_interactions(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    """A creation is delivered when its row is in the target once the INSERT is over, whoever wrote it.

    The rows the INSERT skipped are looked up in a second statement, not in the INSERT's own: under READ
    COMMITTED one statement sees one snapshot, and an INSERT that waited on a concurrent writer's row (the
    completion of the same interaction, upserted by another relay) skips it once that writer commits, while
    a subquery of the same statement still cannot see it. Only a row that is absent after that (another
    interaction holds its message_id) is held as a conflict."""
    await cur.execute(INSERT_INTERACTIONS_SQL, {"rows": _rows_json(payloads)})
    written = {row[0] for row in await cur.fetchall()}
    skipped = [key for key in keys if key not in written]
    if skipped:
        await cur.execute(EXISTING_INTERACTIONS_SQL, {"ids": skipped})
        written.update(row[0] for row in await cur.fetchall())
    return DeliveryResult(
        delivered=written,
        held={key: "message_id_conflict" for key in keys if key not in written},
    )


async def deliver_completions(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    await cur.execute(UPSERT_COMPLETIONS_SQL, {"rows": _rows_json(payloads)})
    written = {row[0] for row in await cur.fetchall()}
    return DeliveryResult(delivered=written, held={key: "not_written" for key in keys if key not in written})


async def deliver_signals(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    try:
        async with savepoint(cur, "deliver_signals"):
            await cur.execute(INSERT_SIGNALS_SQL, {"rows": _rows_json(payloads)})
            written = {row[0] for row in await cur.fetchall()}
    except psycopg2.errors.ForeignKeyViolation:
        # A parent deleted between the check and the insert: every signal of the batch waits and retries.
        return DeliveryResult(held={key: "fk_violation" for key in keys})
    return DeliveryResult(delivered=written, held={key: PARENT_MISSING for key in keys if key not in written})


# Interactions are delivered before signals, so a batch that holds both finds the parents in place; a signal
# waits for its interaction, created or completed (a completion carries the whole row).
ECO_TARGET = Target(
    deliverers={
        Kind.INTERACTION: deliver_interactions,
        Kind.INTERACTION_COMPLETION: deliver_completions,
        Kind.SIGNAL: deliver_signals,
    },
    waits_on={Kind.SIGNAL: frozenset({Kind.INTERACTION, Kind.INTERACTION_COMPLETION})},
    log_fields=("interaction_id", "signal"),
)
