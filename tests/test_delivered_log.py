"""Delete-on-delivery: a delivered row leaves eco_outbox.events in the statement that marks it, and the log of
delivered rows keeps what the dedupe, the parent checks, the status read and the purge need. Rows a previous
release marked delivered in place are read and purged beside the log's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiopg
import pytest

from outbox.enqueue import OutboxWriter
from outbox.relay import PAUSE_MARKED, Relay
from outbox.retention import purge_delivered
from outbox.status import group_status
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import (
    FeedbackRow,
    InteractionRow,
    Parent,
    feedback_event,
    interaction_event,
    signal_event,
)
from tests.conftest import TEST_RELAY
from tests.helpers import fetch, insert_interaction, scalar, wait_for
from tests.relay_pauses import Pauses

# The intake INSERT that waits on a row lock: the relay's uncommitted DELETE of the same key.
INTAKE_WAITING_SQL = (
    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
    " and query like '%%INSERT INTO eco_outbox.events%%'"
)


@pytest.fixture
async def writer(db: aiopg.Pool) -> AsyncIterator[OutboxWriter]:
    writer = OutboxWriter(db, OUTBOX_NAMES, flushers=1)
    await writer.start()
    yield writer
    await writer.close()


def relay(db: aiopg.Pool, pause: Pauses | None = None) -> Relay:
    if pause is None:
        return Relay(db, db, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES)
    return Relay(db, db, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES, pause=pause)


async def test_a_delivered_row_moves_to_the_log_and_its_status_stays(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    iid = uuid.uuid4()
    signal = signal_event(iid, "view", {"type": "passive", "big": "x" * 1000})
    await writer.enqueue([interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC))), signal])

    outcome = await relay(db).run_once()

    assert (outcome.claimed, outcome.delivered) == (2, 2)
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0
    logged = await fetch(db, "select kind, attempts, summary from eco_outbox.events_delivered order by seq")
    # Of the payload, the log keeps only what the status shows: a signal's name and meta.type.
    assert logged == [("interaction", 1, None), ("signal", 1, {"signal": "view", "meta.type": "passive"})]
    status = await group_status(db, OUTBOX_NAMES, iid, 10)
    assert [
        (e.kind, e.state, e.attempts, e.field("signal"), e.field("meta.type")) for e in status.events
    ] == [
        ("interaction", "delivered", 1, None, None),
        ("signal", "delivered", 1, "view", "passive"),
    ]


async def test_a_key_in_the_log_is_not_taken_in_again(db: aiopg.Pool, writer: OutboxWriter) -> None:
    """A signal id posted again after its delivery, and an interaction repeating a delivered one's dedupe key
    (a client message id), are refused as when the row was still in the table."""
    iid = uuid.uuid4()
    await insert_interaction(db, str(iid))
    signal = signal_event(iid, "view", {})
    first = InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), message_id="m-1")
    assert [r.inserted for r in await writer.enqueue([signal, interaction_event(first)])] == [True, True]
    await relay(db).run_once()
    assert await scalar(db, "select count(*) from eco_outbox.events_delivered") == 2

    again = InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), message_id="m-1")
    results = await writer.enqueue(
        [signal_event(iid, "view", {}, signal_id=signal.key), interaction_event(again)]
    )

    assert [r.inserted for r in results] == [False, False]
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0


async def test_retention_purges_the_log_and_rows_marked_in_place(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    iid = uuid.uuid4()
    await insert_interaction(db, str(iid))
    await writer.enqueue([signal_event(iid, "old", {}), signal_event(iid, "new", {})])
    await relay(db).run_once()
    # A previous release's row, marked delivered in place, as old as the first logged one.
    await writer.enqueue([signal_event(iid, "in-place", {})])
    await fetch(
        db, "update eco_outbox.events set state = 'delivered', delivered_at = now() - interval '2 days'"
    )
    await fetch(
        db,
        "update eco_outbox.events_delivered set delivered_at = now() - interval '2 days'"
        " where summary ->> 'signal' = 'old'",
    )

    assert await purge_delivered(db, OUTBOX_NAMES, retention_s=86400, batch=1) == 2

    status = await group_status(db, OUTBOX_NAMES, iid, 10)
    assert [(e.field("signal"), e.state) for e in status.events] == [("new", "delivered")]


async def test_a_parent_marked_in_place_by_a_previous_release_releases_its_children(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    """During a rolling upgrade the previous release marks parents delivered in the table: the parent checks
    read it there too."""
    iid = uuid.uuid4()
    child = signal_event(iid, "view", {})
    await writer.enqueue([child])
    await fetch(db, "update eco_outbox.events set next_attempt_at = now() + interval '1 hour'")
    await writer.enqueue([interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC)))])
    await insert_interaction(db, str(iid))
    await fetch(
        db,
        "update eco_outbox.events set state = 'delivered', delivered_at = now() where kind = 'interaction'",
    )

    await relay(db)._release([str(iid)])

    assert await scalar(
        db, "select next_attempt_at <= now() from eco_outbox.events where key = %s", (child.key,)
    )


async def test_a_retry_that_waited_on_its_first_copy_being_moved_is_refused(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    """The READ COMMITTED race, pinned: the relay has deleted a signal and a vote (moved to the log, not yet
    committed) when the client's retry of both comes in. The intake INSERT finds no log row in its snapshot,
    waits on the rows being deleted and, once the relay commits, inserts them again; the statement after it
    (a new snapshot, the same transaction) finds them in the log and takes them out before they commit. The
    retry is answered as a repeat, and the target holds one signal, one vote, the arm counted once."""
    iid = uuid.uuid4()
    await insert_interaction(db, str(iid))
    signal = signal_event(iid, "view", {})
    vote = FeedbackRow(Parent(iid), "up", None, None, {}, None, "arm-1", None, None, None)
    await writer.enqueue([signal, feedback_event(vote)])
    pauses = Pauses(PAUSE_MARKED)
    first = asyncio.create_task(relay(db, pauses).run_once())
    await pauses.reached(PAUSE_MARKED)

    retry = asyncio.create_task(
        writer.enqueue([signal_event(iid, "view", {}, signal_id=signal.key), feedback_event(vote)])
    )
    await wait_for(lambda: scalar(db, INTAKE_WAITING_SQL), lambda waiting: waiting == 1)
    pauses.resume(PAUSE_MARKED)
    assert (await first).delivered == 2

    assert [r.inserted for r in await retry] == [False, False]
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0
    assert (await relay(db).run_once()).claimed == 0
    signals = await scalar(
        db, "select count(*) from analytics.eco_passive_signals where id = %s", (signal.key,)
    )
    votes = await scalar(db, "select count(*) from analytics.eco_feedback where id = %s", (vote.id,))
    assert (signals, votes) == (1, 1)
    arm = "select pulls, reward_sum::float8 from analytics.eco_bandit_arms where arm_key = 'arm-1'"
    assert await fetch(db, arm) == [(1, 1.0)]
    assert await fetch(db, "select kind, attempts from eco_outbox.events_delivered order by kind") == [
        ("feedback", 1),
        ("signal", 1),
    ]


async def test_a_repeated_dedupe_key_that_waited_on_its_first_copy_being_moved_is_refused(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    """The same race for a dedupe key on a new key (an ask repeating a client message id): refused, as
    when the first copy is still in the table or already in the log."""
    first_ask = InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), message_id="m-1")
    await writer.enqueue([interaction_event(first_ask)])
    pauses = Pauses(PAUSE_MARKED)
    first = asyncio.create_task(relay(db, pauses).run_once())
    await pauses.reached(PAUSE_MARKED)

    again = InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), message_id="m-1")
    repeat = asyncio.create_task(writer.enqueue([interaction_event(again)]))
    await wait_for(lambda: scalar(db, INTAKE_WAITING_SQL), lambda waiting: waiting == 1)
    pauses.resume(PAUSE_MARKED)
    assert (await first).delivered == 1

    assert [r.inserted for r in await repeat] == [False]
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0
