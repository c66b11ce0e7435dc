"""The engine on a target of its own (tests/outbox/toy.py): it delivers parents before children, holds a
child whose parent is missing and releases it when the parent lands, isolates the rows the target refuses,
and is idempotent on keys. Real PostgreSQL, no ECO table involved."""

from __future__ import annotations

import uuid
from dataclasses import replace

import aiopg
import pytest

from outbox import admin
from outbox.enqueue import OutboxWriter
from outbox.queries import queries
from outbox.relay import Relay
from outbox.target import Target
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, scalar
from tests.outbox.toy import (
    CHILD,
    PARENT,
    TOY_NAMES,
    TOY_TARGET,
    child_event,
    deliver_parents,
    parent_event,
)


async def states(db: aiopg.Pool) -> dict[str, str]:
    return dict(await fetch(db, f"SELECT key::text, state FROM {OUTBOX_ROWS}"))


async def test_parents_first_in_one_batch(db: aiopg.Pool, writer: OutboxWriter) -> None:
    parent = uuid.uuid4()
    # The child is enqueued first: the target's order, not the outbox's, decides.
    await writer.enqueue([child_event(parent, "hello"), parent_event(parent, "p")])

    outcome = await Relay(db, db, TOY_TARGET, TEST_RELAY, names=TOY_NAMES).run_once()

    assert (outcome.claimed, outcome.delivered, outcome.retried) == (2, 2, 0)
    assert await fetch(db, "SELECT parent_id, note FROM toy.children") == [(parent, "hello")]
    assert set((await states(db)).values()) == {"delivered"}


async def test_the_rows_of_one_statement_take_their_seq_in_the_order_sent(db: aiopg.Pool) -> None:
    """The relay claims by seq: one request's rows, and a group commit's, are claimed in the order they came,
    whatever plan the intake statement's anti-joins get. Pinned here to the plan that hands the rows out in
    hash order (PostgreSQL 16 and later): a log of past deliveries far larger than the statement's rows, hash
    joins only, so the planner hashes the rows and scans the log against them."""
    await fetch(
        db,
        "INSERT INTO eco_outbox.events_delivered"
        " (key, kind, group_key, seq, attempts, created_at, delivered_at)"
        " SELECT gen_random_uuid(), 'old', gen_random_uuid(), n, 1, now(), now()"
        " FROM generate_series(1, 200000) AS n",
    )
    await fetch(db, "ANALYZE eco_outbox.events_delivered")
    keys = [str(uuid.uuid4()) for _ in range(200)]
    params = {
        "kinds": [CHILD] * len(keys),
        "keys": keys,
        "group_keys": keys,
        "payloads": ["{}"] * len(keys),
        "dedupe_keys": [None] * len(keys),
    }
    async with db.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SET enable_nestloop = off; SET enable_mergejoin = off")
        await cur.execute(queries(TOY_NAMES)["insert_events"].sql, params)
        await cur.execute("RESET enable_nestloop; RESET enable_mergejoin")
    stored = [key for (key,) in await fetch(db, "SELECT key::text FROM eco_outbox.events ORDER BY seq")]
    assert stored == keys


async def test_a_child_waits_for_its_parent_and_is_released_when_it_lands(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    parent = uuid.uuid4()
    [child] = await writer.enqueue([child_event(parent, "early")])
    relay = Relay(
        db,
        db,
        TOY_TARGET,
        replace(TEST_RELAY, backoff=replace(TEST_RELAY.backoff, base_ms=60_000, cap_ms=60_000)),
        names=TOY_NAMES,
    )

    held = await relay.run_once()
    assert (held.delivered, held.retried) == (0, 1)
    [(state, error, due_later)] = await fetch(
        db, f"SELECT state, last_error, next_attempt_at > now() FROM {OUTBOX_ROWS}"
    )
    assert (state, error, due_later) == ("pending", "parent_missing", True)

    await writer.enqueue([parent_event(parent, "late")])
    landed = await relay.run_once()
    assert landed.release_groups == [str(parent)]
    # Released: due now, not after its minute of backoff.
    again = await relay.run_once()
    assert again.delivered == 1
    assert await scalar(db, "SELECT note FROM toy.children WHERE id = %s", (str(child.event.key),)) == "early"


async def test_a_refused_row_is_isolated_and_dead_lettered(db: aiopg.Pool, writer: OutboxWriter) -> None:
    parent = uuid.uuid4()
    good = [child_event(parent, f"ok {n}") for n in range(5)]
    bad = child_event(parent, "far too long for the target")
    await writer.enqueue([parent_event(parent, "p"), *good[:2], bad, *good[2:]])

    outcome = await Relay(db, db, TOY_TARGET, replace(TEST_RELAY, max_attempts=1), names=TOY_NAMES).run_once()

    assert (outcome.delivered, outcome.dead) == (6, 1)
    assert await scalar(db, "SELECT count(*) FROM toy.children") == 5
    [letter] = await admin.list_dead(db, TOY_NAMES)
    assert (letter.kind, letter.key, letter.group_key) == (CHILD, str(bad.key), str(parent))
    assert letter.last_error is not None and letter.last_error.startswith("23514")


async def test_enqueue_is_idempotent_on_kind_and_key(db: aiopg.Pool, writer: OutboxWriter) -> None:
    parent = uuid.uuid4()
    [first] = await writer.enqueue([parent_event(parent, "p")])
    [second] = await writer.enqueue([parent_event(parent, "p again")])
    assert (first.inserted, second.inserted) == (True, False)
    assert await scalar(db, f"SELECT count(*) FROM {OUTBOX_ROWS} WHERE kind = %s", (PARENT,)) == 1


def test_a_target_names_only_kinds_it_delivers() -> None:
    with pytest.raises(ValueError, match="waits_on"):
        Target(deliverers={PARENT: deliver_parents}, waits_on={CHILD: frozenset({PARENT})})


async def test_a_relay_leaves_kinds_its_target_does_not_deliver(db: aiopg.Pool, writer: OutboxWriter) -> None:
    """A newer release beside this one may write a kind this relay has no deliverer for: it neither claims
    it (its batches would fail) nor counts it as due (it would poll without pause)."""
    parent = uuid.uuid4()
    await writer.enqueue([parent_event(parent, "p"), child_event(parent, "new kind")])
    parents_only = Target(deliverers={PARENT: deliver_parents})
    relay = Relay(db, db, parents_only, TEST_RELAY, names=TOY_NAMES)

    outcome = await relay.run_once()

    assert (outcome.claimed, outcome.delivered) == (1, 1)
    assert await fetch(db, f"SELECT kind, state, attempts FROM {OUTBOX_ROWS} ORDER BY kind") == [
        (CHILD, "pending", 0),
        (PARENT, "delivered", 1),
    ]
    assert await relay._seconds_until_due() == TEST_RELAY.poll_s


async def test_a_kind_no_release_took_within_the_max_age_dies_alone(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    """A kind left behind by a release that rolled back: once older than the max age, no relay that knows it
    took it, and it is dead-lettered as unknown_kind in the same pass that delivers the rest, kept for a
    requeue once a release that knows it runs again."""
    parent, orphaned = uuid.uuid4(), uuid.uuid4()
    await writer.enqueue(
        [parent_event(parent, "p"), child_event(orphaned, "left"), parent_event(orphaned, "q")]
    )
    await fetch(
        db, "UPDATE eco_outbox.events SET created_at = now() - interval '2 hours' WHERE kind = %s", [CHILD]
    )
    relay = Relay(db, db, Target(deliverers={PARENT: deliver_parents}), TEST_RELAY, names=TOY_NAMES)

    outcome = await relay.run_once()

    assert (outcome.claimed, outcome.delivered, outcome.dead) == (3, 2, 1)
    assert await fetch(
        db, f"SELECT kind, state, attempts, last_error FROM {OUTBOX_ROWS} ORDER BY kind, seq"
    ) == [
        (CHILD, "dead", 1, "unknown_kind"),
        (PARENT, "delivered", 1, None),
        (PARENT, "delivered", 1, None),
    ]
    assert len(await admin.requeue(db, TOY_NAMES)) == 1
    assert (await Relay(db, db, TOY_TARGET, TEST_RELAY, names=TOY_NAMES).run_once()).delivered == 1
    assert await fetch(db, "SELECT parent_id, note FROM toy.children") == [(orphaned, "left")]
