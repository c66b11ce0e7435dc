"""Set-based writes to the target tables: one statement per kind and batch, idempotent on the rows' ids.

The target may be another server than the outbox, so there is no shared transaction: a batch written here
and not yet marked in the outbox is written again after a crash, and ON CONFLICT makes that a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg2.errors
from aiopg import Cursor

from outbox.sqlutil import savepoint

INTERACTION_COLUMNS = """
    id uuid, user_id uuid, session_id text, message_id text, prompt_hash text, module_combo text[],
    tokens_in int, tokens_out int, latency_ms int, created_at timestamptz, meta jsonb
"""

INSERT_INTERACTIONS_SQL = f"""
WITH rows AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r({INTERACTION_COLUMNS})
), inserted AS (
    INSERT INTO analytics.eco_interactions
        (id, user_id, session_id, message_id, prompt_hash, module_combo,
         tokens_in, tokens_out, latency_ms, created_at, meta)
    SELECT id, user_id, session_id, message_id, prompt_hash, module_combo,
           tokens_in, tokens_out, latency_ms, created_at, coalesce(meta, '{{}}'::jsonb)
    FROM rows
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT rows.id::text FROM rows
WHERE rows.id IN (SELECT id FROM inserted)
   OR EXISTS (SELECT 1 FROM analytics.eco_interactions i WHERE i.id = rows.id)
"""

# A completion may reach the target before its creation (another relay holds that row): it then inserts the
# whole row, and the creation's DO NOTHING keeps it.
UPSERT_COMPLETIONS_SQL = f"""
INSERT INTO analytics.eco_interactions
    (id, user_id, session_id, message_id, prompt_hash, module_combo,
     tokens_in, tokens_out, latency_ms, created_at, meta)
SELECT id, user_id, session_id, message_id, prompt_hash, module_combo,
       tokens_in, tokens_out, latency_ms, created_at, coalesce(meta, '{{}}'::jsonb)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r({INTERACTION_COLUMNS})
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


PARENT_MISSING = "parent_missing"


@dataclass
class DeliveryResult:
    """Keys written (or found already written), keys held back (waiting) and keys the target refused, with
    the reason for each: `parent_missing`, or the SQLSTATE and message of the refusal."""

    delivered: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def merged(self, other: DeliveryResult) -> DeliveryResult:
        return DeliveryResult(
            self.delivered | other.delivered, {**self.held, **other.held}, {**self.refused, **other.refused}
        )


def _rows_json(payloads: Sequence[str]) -> str:
    return "[" + ",".join(payloads) + "]"


async def deliver_interactions(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    await cur.execute(INSERT_INTERACTIONS_SQL, {"rows": _rows_json(payloads)})
    written = {row[0] for row in await cur.fetchall()}
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
