"""The bandit's counts: one reward row per (response, arm) holding the latest vote, and each reward counted
exactly once in eco_bandit_arms, however the votes are delivered: twice, late, or by two relays at once.

Two relays are two target transactions running the feedback deliverer; the interleavings are pinned by
holding one open until the other is seen waiting on a lock."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiopg
from aiopg import Cursor

from outbox.enqueue import encode_payload
from service.target.delivery import deliver_feedback
from service.target.rows import FeedbackRow, Parent, feedback_event
from tests.conftest import TEST_RELAY
from tests.helpers import fetch, insert_interaction, scalar, wait_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def vote(interaction_id: str, value: str, second: int, arm: str = "arm-a") -> FeedbackRow:
    return FeedbackRow(
        parent=Parent(uuid.UUID(interaction_id)),
        vote=value,
        reason=None,
        source="test",
        meta={},
        message_id=None,
        arm=arm,
        pillar=None,
        user_id=None,
        session_id=None,
        voted_at=T0 + timedelta(seconds=second),
    )


async def deliver(cur: Cursor, *rows: FeedbackRow) -> set[str]:
    events = [feedback_event(row) for row in rows]
    result = await deliver_feedback(
        cur, [str(e.key) for e in events], [encode_payload(e.payload) for e in events]
    )
    return result.delivered


@asynccontextmanager
async def open_transaction(pool: aiopg.Pool) -> AsyncIterator[Cursor]:
    """A target transaction that the test commits (or leaves to roll back) itself."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("BEGIN")
        try:
            yield cur
        finally:
            if not cur.closed:
                await cur.execute("ROLLBACK")


async def deliver_committed(pool: aiopg.Pool, *rows: FeedbackRow) -> set[str]:
    async with open_transaction(pool) as cur:
        delivered = await deliver(cur, *rows)
        await cur.execute("COMMIT")
    return delivered


async def arm(db: aiopg.Pool, key: str = "arm-a") -> tuple[Any, ...]:
    rows = await fetch(
        db,
        "select pulls, alpha, beta, reward_sum, reward_sq_sum from analytics.eco_bandit_arms"
        " where arm_key = %s",
        (key,),
    )
    return rows[0] if rows else ()


async def rewards(db: aiopg.Pool, interaction_id: str) -> list[tuple[str, float]]:
    rows = await fetch(
        db, "select arm, recompensa from analytics.bandit_rewards where response_id = %s", (interaction_id,)
    )
    return [(a, float(r)) for a, r in rows]


async def waiting_on_a_lock(db: aiopg.Pool) -> bool:
    return bool(
        await scalar(
            db,
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and wait_event_type = 'Lock'",
        )
    )


async def test_the_same_vote_twice_counts_once(db: aiopg.Pool) -> None:
    iid = str(uuid.uuid4())
    await insert_interaction(db, iid)
    up = vote(iid, "up", 1)
    await deliver_committed(db, up)
    await deliver_committed(db, up)  # a re-delivery after a crash before the outbox was marked
    await deliver_committed(db, vote(iid, "up", 2))  # the user clicked like again
    assert await rewards(db, iid) == [("arm-a", 1.0)]
    assert await arm(db) == (1, 2.0, 1.0, 1.0, 1.0)
    assert (
        await scalar(db, "select count(*) from analytics.eco_feedback where interaction_id = %s", (iid,)) == 2
    )


async def test_a_changed_vote_moves_its_count(db: aiopg.Pool) -> None:
    iid, other = str(uuid.uuid4()), str(uuid.uuid4())
    for interaction in (iid, other):
        await insert_interaction(db, interaction)
    await deliver_committed(db, vote(iid, "up", 1), vote(other, "up", 1))
    assert await arm(db) == (2, 3.0, 1.0, 2.0, 2.0)
    await deliver_committed(db, vote(iid, "down", 2))
    assert await rewards(db, iid) == [("arm-a", -1.0)]
    assert await arm(db) == (2, 2.0, 2.0, 0.0, 2.0)
    # A vote older than the one held, delivered late (a retry, another relay): nothing moves.
    await deliver_committed(db, vote(iid, "up", 0))
    assert await rewards(db, iid) == [("arm-a", -1.0)]
    assert await arm(db) == (2, 2.0, 2.0, 0.0, 2.0)


async def test_two_votes_of_one_batch_count_the_latest(db: aiopg.Pool) -> None:
    iid = str(uuid.uuid4())
    await insert_interaction(db, iid)
    await deliver_committed(db, vote(iid, "down", 2), vote(iid, "up", 1))
    assert await rewards(db, iid) == [("arm-a", -1.0)]
    assert await arm(db) == (1, 1.0, 2.0, -1.0, 1.0)


async def test_a_first_vote_on_a_new_arm_by_two_relays_at_once_counts_both(db: aiopg.Pool) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for interaction in (first, second):
        await insert_interaction(db, interaction)
    async with open_transaction(db) as cur:
        await deliver(cur, vote(first, "up", 1, arm="new-arm"))
        # The other relay inserts the same new arm: it waits on this transaction's row.
        other = asyncio.create_task(deliver_committed(db, vote(second, "down", 1, arm="new-arm")))
        await wait_for(lambda: waiting_on_a_lock(db))
        assert not other.done()
        await cur.execute("COMMIT")
    await other
    assert await arm(db, "new-arm") == (2, 2.0, 2.0, 0.0, 2.0)


async def test_a_vote_change_delivered_by_two_relays_at_once_counts_the_latest(db: aiopg.Pool) -> None:
    for newer_first in (False, True):
        iid = str(uuid.uuid4())
        arm_key = f"arm-{newer_first}"
        await insert_interaction(db, iid)
        older, newer = vote(iid, "up", 1, arm=arm_key), vote(iid, "down", 2, arm=arm_key)
        held, waiting = (newer, older) if newer_first else (older, newer)
        async with open_transaction(db) as cur:
            await deliver(cur, held)
            other = asyncio.create_task(deliver_committed(db, waiting))
            await wait_for(lambda: waiting_on_a_lock(db))
            await cur.execute("COMMIT")
        await other
        assert await rewards(db, iid) == [(arm_key, -1.0)]
        assert await arm(db, arm_key) == (1, 1.0, 2.0, -1.0, 1.0), newer_first


async def test_votes_delivered_by_several_relays_count_each_reward_once(
    make_client: Any, db: aiopg.Pool
) -> None:
    """Many votes, changed back and forth, through three relay loops taking one row at a time: in the end
    every reward row holds its latest vote and the arms count exactly those rows."""
    client = await make_client(relay=replace(TEST_RELAY, loops=3, batch_size=1))
    rng = random.Random(17)
    latest: dict[tuple[str, str], str] = {}
    interactions = [str(uuid.uuid4()) for _ in range(6)]
    for _ in range(40):
        iid, arm_key, value = rng.choice(interactions), rng.choice(["a1", "a2"]), rng.choice(["up", "down"])
        resp = await client.post("/api/feedback", json={"interaction_id": iid, "vote": value, "arm": arm_key})
        assert resp.status == 204
        latest[(iid, arm_key)] = value
    for iid in interactions:
        await insert_interaction(db, iid)
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda n: n == 0,
    )
    stored = {
        (response_id, arm_key): float(reward)
        for response_id, arm_key, reward in await fetch(
            db, "select response_id, arm, recompensa from analytics.bandit_rewards"
        )
    }
    assert stored == {key: 1.0 if value == "up" else -1.0 for key, value in latest.items()}
    for arm_key in ("a1", "a2"):
        mine = [reward for (_, a), reward in stored.items() if a == arm_key]
        ups = sum(1 for reward in mine if reward > 0)
        expected = (len(mine), 1.0 + ups, 1.0 + len(mine) - ups, float(sum(mine)), float(len(mine)))
        assert await arm(db, arm_key) == (expected if mine else ())
