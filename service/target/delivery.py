"""Set-based writes to the target tables: one statement per kind and batch, idempotent on the rows' ids.

The target may be another server than the outbox, so there is no shared transaction: a batch written here
and not yet marked in the outbox is written again after a crash, and ON CONFLICT makes that a no-op.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import psycopg2.errors
from aiopg import Cursor

from outbox.sqlutil import execute_in_savepoint, savepoint
from outbox.target import PARENT_MISSING, DeliveryResult, Target
from service.target import bandit
from service.target.queries import TARGET_QUERIES
from service.target.rows import CHILD_KINDS, Kind

# A child filed under the app's local reply id that no request has tied to an interaction yet.
UNRESOLVED_MESSAGE = "unresolved_message"
# What the status read shows of a signal's payload (its name and meta.type), kept once it is delivered.
SIGNAL_NAME_FIELD = "signal"
SIGNAL_TYPE_FIELD = "meta.type"


def _rows_json(payloads: Sequence[str]) -> str:
    return "[" + ",".join(payloads) + "]"


async def deliver_interactions(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    """A creation is delivered when its row is in the target once the INSERT is over, whoever wrote it.

    The rows the INSERT skipped are looked up in a second statement, not in the INSERT's own: under READ
    COMMITTED one statement sees one snapshot, and an INSERT that waited on a concurrent writer's row (the
    completion of the same interaction, upserted by another relay) skips it once that writer commits, while
    a subquery of the same statement still cannot see it. Only a row that is absent after that (another
    interaction holds its message_id) is held as a conflict."""
    await cur.execute(TARGET_QUERIES["insert_interactions"].sql, {"rows": _rows_json(payloads)})
    written = {row[0] for row in await cur.fetchall()}
    skipped = [key for key in keys if key not in written]
    if skipped:
        await cur.execute(TARGET_QUERIES["existing_interactions"].sql, {"ids": skipped})
        written.update(row[0] for row in await cur.fetchall())
    return DeliveryResult(
        delivered=written,
        held={key: "message_id_conflict" for key in keys if key not in written},
    )


async def deliver_completions(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    await cur.execute(TARGET_QUERIES["upsert_completions"].sql, {"rows": _rows_json(payloads)})
    written = {row[0] for row in await cur.fetchall()}
    return DeliveryResult(delivered=written, held={key: "not_written" for key in keys if key not in written})


async def _deliver_children(
    cur: Cursor, sql: str, name: str, keys: Sequence[str], payloads: Sequence[str]
) -> DeliveryResult:
    try:
        await execute_in_savepoint(cur, name, sql, {"rows": _rows_json(payloads)})
    except psycopg2.errors.ForeignKeyViolation:
        # A parent deleted between the check and the insert: every row of the batch waits and retries.
        return DeliveryResult(held={key: "fk_violation" for key in keys})
    return _children_result(keys, payloads, {row[0] for row in await cur.fetchall()})


def _children_result(keys: Sequence[str], payloads: Sequence[str], written: set[str]) -> DeliveryResult:
    """The rows not written wait: for their interaction, or, filed under the app's local reply id (no
    interaction_id yet), for the link that names it. Only those are read here, and only on that path."""
    return DeliveryResult(
        delivered=written,
        held={
            key: UNRESOLVED_MESSAGE if json.loads(payload).get("interaction_id") is None else PARENT_MISSING
            for key, payload in zip(keys, payloads, strict=True)
            if key not in written
        },
    )


async def deliver_signals(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    return await _deliver_children(
        cur, TARGET_QUERIES["insert_signals"].sql, "deliver_signals", keys, payloads
    )


async def deliver_module_usages(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    return await _deliver_children(
        cur, TARGET_QUERIES["insert_module_usages"].sql, "deliver_module_usages", keys, payloads
    )


async def deliver_feedback(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    try:
        async with savepoint(cur, "deliver_feedback"):
            written = await bandit.deliver_votes(cur, _rows_json(payloads))
    except psycopg2.errors.ForeignKeyViolation:
        return DeliveryResult(held={key: "fk_violation" for key in keys})
    return _children_result(keys, payloads, written)


async def deliver_links(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    """A link writes nothing to the target: the outbox row is the link (outbox.aliases reads it there)."""
    return DeliveryResult(delivered=set(keys))


# Interactions are delivered before their children, so a batch that holds both finds the parents in place,
# and module usages before feedback, whose arm is the interaction's first module; a child waits for its
# interaction, created or completed (a completion carries the whole row). A child filed under the app's
# local reply id waits for the link that names its interaction.
ECO_TARGET = Target(
    deliverers={
        Kind.INTERACTION: deliver_interactions,
        Kind.INTERACTION_COMPLETION: deliver_completions,
        Kind.MESSAGE_LINK: deliver_links,
        Kind.SIGNAL: deliver_signals,
        Kind.MODULE_USAGE: deliver_module_usages,
        Kind.FEEDBACK: deliver_feedback,
    },
    waits_on={kind: frozenset({Kind.INTERACTION, Kind.INTERACTION_COMPLETION}) for kind in CHILD_KINDS},
    log_fields=("interaction_id", "signal"),
    alias_kind=Kind.MESSAGE_LINK,
    unresolved_reason=UNRESOLVED_MESSAGE,
    status_fields={Kind.SIGNAL: (SIGNAL_NAME_FIELD, SIGNAL_TYPE_FIELD)},
)
