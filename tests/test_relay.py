"""The relay: a signal whose parent arrives late is delivered exactly once; one whose parent never arrives is
dead-lettered and kept; retries back off exponentially with jitter; dead rows can be requeued; delivering
the same rows again changes nothing in the target."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from loguru import logger

from outbox import admin as outbox_admin
from outbox.backoff import Backoff
from outbox.enqueue import OutboxWriter
from outbox.events import OutboxEvent
from outbox.relay import Relay, RelaySettings
from outbox.retention import purge_delivered
from service.app import create_app
from service.config import Config
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, completion_event, interaction_event, signal_event
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, insert_interaction, scalar, wait_for

OUTBOX_ROW_SQL = (
    "select seq, state, attempts, next_attempt_at, created_at, delivered_at, dead_at, last_error, payload"
    f" from {OUTBOX_ROWS} where key = %s and kind = 'signal'"
)
OUTBOX_COLUMNS = (
    "seq",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
    "delivered_at",
    "dead_at",
    "last_error",
    "payload",
)


async def outbox_row(db: Any, key: str) -> dict[str, Any]:
    rows = await fetch(db, OUTBOX_ROW_SQL, (key,))
    assert len(rows) == 1, rows
    return dict(zip(OUTBOX_COLUMNS, rows[0], strict=True))


async def target_count(db: Any, signal_id: str) -> int:
    return await scalar(db, "select count(*) from analytics.eco_passive_signals where id = %s", (signal_id,))


async def post_signal(client: TestClient, iid: str, **fields: Any) -> str:
    resp = await client.post("/api/signal", json={"interaction_id": iid, "name": "view", **fields})
    assert resp.status == 202, await resp.text()
    return (await resp.json())["id"]


async def app_client(aiohttp_client: Any, config: Config) -> TestClient:
    return await aiohttp_client(create_app(config))


# (a) the late parent ----------------------------------------------------------------------------------------


async def test_signal_for_late_interaction_is_delivered_exactly_once(client: TestClient, db: Any) -> None:
    iid = str(uuid.uuid4())
    signal_id = await post_signal(client, iid, meta={"k": "v"})
    waiting = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["attempts"] >= 3)
    assert waiting["state"] == "pending" and waiting["last_error"] == "parent_missing"
    assert await target_count(db, signal_id) == 0

    await insert_interaction(db, iid)
    row = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["state"] == "delivered")
    assert row["attempts"] > waiting["attempts"] and row["last_error"] is None
    assert await target_count(db, signal_id) == 1
    stored = await fetch(
        db,
        "select interaction_id::text, signal, meta from analytics.eco_passive_signals where id = %s",
        (signal_id,),
    )
    assert stored == [(iid, "view", {"k": "v", "type": "passive"})]


async def test_parent_delivered_by_the_relay_releases_waiting_signals(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    """A signal in a long backoff is retried once the relay delivers its interaction, not at its due time."""
    slow_retry = Backoff(base_ms=60_000, cap_ms=60_000)
    client = await app_client(aiohttp_client, make_config(relay=replace(TEST_RELAY, backoff=slow_retry)))
    iid = uuid.uuid4()
    signal_id = await post_signal(client, str(iid))
    waiting = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["attempts"] >= 1)
    assert waiting["next_attempt_at"] - waiting["created_at"] >= timedelta(seconds=30)

    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        await writer.enqueue([interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC)))])
    finally:
        await writer.close()
    row = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["state"] == "delivered")
    assert row["delivered_at"] < waiting["next_attempt_at"]
    assert row["attempts"] == 2
    assert await target_count(db, signal_id) == 1


# (b) the parent that never comes ----------------------------------------------------------------------------


async def test_orphan_signal_is_dead_lettered_and_kept(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    client = await app_client(aiohttp_client, make_config(relay=replace(TEST_RELAY, max_attempts=3)))
    iid = str(uuid.uuid4())
    signal_id = await post_signal(client, iid, meta={"screen": "chat"}, value=2.0)
    row = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["state"] == "dead")
    assert row["attempts"] == 3
    assert row["dead_at"] is not None and row["last_error"] == "parent_missing"
    assert row["payload"]["id"] == signal_id
    assert row["payload"]["interaction_id"] == iid
    assert row["payload"]["signal"] == "view"
    assert row["payload"]["meta"] == {"screen": "chat", "type": "passive", "value": 2.0}
    assert await target_count(db, signal_id) == 0

    [letter] = await outbox_admin.list_dead(db, OUTBOX_NAMES)
    assert (letter.seq, letter.key, letter.kind, letter.attempts) == (row["seq"], signal_id, "signal", 3)
    assert letter.payload == row["payload"]
    await purge_delivered(db, OUTBOX_NAMES, retention_s=0.0, batch=100)
    assert await outbox_row(db, signal_id) == row, "retention purges delivered rows only"


async def test_orphan_signal_dies_of_old_age(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    max_age_s = 0.3
    relay = replace(TEST_RELAY, max_attempts=1000, max_age_s=max_age_s)
    client = await app_client(aiohttp_client, make_config(relay=relay))
    signal_id = await post_signal(client, str(uuid.uuid4()))
    row = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["state"] == "dead")
    # Retried more than once, yet far from max_attempts: its age ended it.
    assert 1 < row["attempts"] < relay.max_attempts
    assert row["last_error"] == "parent_missing"
    assert await target_count(db, signal_id) == 0


async def test_age_kills_a_waiting_child_never_a_parent(db: Any) -> None:
    """Both rows are older than the max age (an outage spent it) and both miss: the orphan signal dies of age,
    the interaction the target refuses is charged and retried, bounded by its attempts only."""
    await fetch(
        db,
        "alter table analytics.eco_interactions add constraint no_poison"
        " check (meta ->> 'poison' is null) not valid",
    )
    parent = interaction_event(
        InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), meta={"poison": 1})
    )
    orphan = signal_event(uuid.uuid4(), "view", {})
    await enqueue(db, [parent, orphan])
    await fetch(db, "update eco_outbox.events set created_at = now() - interval '10 seconds'")
    outcome = await Relay(
        db, db, ECO_TARGET, replace(TEST_RELAY, max_age_s=1.0), names=OUTBOX_NAMES
    ).run_once()
    assert (outcome.claimed, outcome.dead, outcome.retried) == (2, 1, 1)
    states = dict(await fetch(db, f"select kind, state || ' ' || attempts from {OUTBOX_ROWS}"))
    assert states == {"interaction": "pending 1", "signal": "dead 1"}


# (c) backoff ------------------------------------------------------------------------------------------------


class _Edge(random.Random):
    """An rng whose jitter always lands on one end of its range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self._high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self._high else a


def ceiling_ms(backoff: Backoff, attempt: int) -> float:
    return min(backoff.cap_ms, backoff.base_ms * 2 ** (attempt - 1))


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 20])
def test_backoff_bounds(attempt: int) -> None:
    backoff = Backoff(base_ms=50, cap_ms=30_000)
    ceiling = ceiling_ms(backoff, attempt)
    assert backoff.delay_ms(attempt, _Edge(high=False)) == ceiling / 2
    assert backoff.delay_ms(attempt, _Edge(high=True)) == ceiling
    rng = random.Random(attempt)
    assert all(ceiling / 2 <= backoff.delay_ms(attempt, rng) <= ceiling for _ in range(200))


def test_backoff_grows_then_caps() -> None:
    backoff = Backoff(base_ms=10, cap_ms=1000)
    lows = [backoff.delay_ms(attempt, _Edge(high=False)) for attempt in range(1, 12)]
    assert lows[:8] == [5, 10, 20, 40, 80, 160, 320, 500]
    assert lows[8:] == [500, 500, 500]
    highs = [backoff.delay_ms(attempt, _Edge(high=True)) for attempt in range(1, 12)]
    assert max(highs) == 1000
    # A huge attempt count neither overflows nor passes the cap.
    assert 500 <= backoff.delay_ms(10**9) <= 1000
    # An attempt below 1 is treated as the first retry.
    assert backoff.delay_ms(0, _Edge(high=True)) == backoff.delay_ms(-5, _Edge(high=True)) == 10


def test_backoff_jitter_spreads_retries() -> None:
    backoff = Backoff(base_ms=100, cap_ms=10_000)
    rng = random.Random(42)
    delays = [backoff.delay_ms(4, rng) for _ in range(500)]
    assert len(set(delays)) > 450
    assert min(delays) < 450 and max(delays) > 750, "the jitter covers the range [400, 800]"
    again = random.Random(42)
    assert [backoff.delay_ms(4, again) for _ in range(500)] == delays


async def enqueue(db: Any, events: list[OutboxEvent]) -> None:
    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        await writer.enqueue(events)
    finally:
        await writer.close()


ROUNDING = timedelta(microseconds=1)


async def db_now(db: Any) -> datetime:
    return await scalar(db, "select now()")


async def test_relay_records_attempts_with_growing_backoff(db: Any) -> None:
    """Each failed attempt is counted and sets next_attempt_at exactly the policy's delay after the claim."""
    backoff = Backoff(base_ms=1000, cap_ms=8000)
    settings = RelaySettings(max_attempts=7, backoff=backoff)
    relay = Relay(db, db, ECO_TARGET, settings, rng=random.Random(7), names=OUTBOX_NAMES)
    expected_rng = random.Random(7)
    event = signal_event(uuid.uuid4(), "view", {})
    await enqueue(db, [event])
    key = str(event.key)

    delays: list[timedelta] = []
    for attempt in range(1, settings.max_attempts):
        before = await db_now(db)
        outcome = await relay.run_once()
        after = await db_now(db)
        assert (outcome.claimed, outcome.retried, outcome.delivered) == (1, 1, 0)
        row = await outbox_row(db, key)
        assert (row["state"], row["attempts"], row["last_error"]) == ("pending", attempt, "parent_missing")
        delay = timedelta(milliseconds=backoff.delay_ms(attempt, expected_rng))
        # The claim's now() lies between the two readings (microsecond rounding aside).
        assert before - ROUNDING <= row["next_attempt_at"] - delay <= after + ROUNDING
        delays.append(delay)
        assert await relay.run_once() == type(outcome)(), "a row is not claimed before it is due"
        await fetch(db, "update eco_outbox.events set next_attempt_at = now() where key = %s", (key,))

    ceilings = [timedelta(milliseconds=ceiling_ms(backoff, a)) for a in range(1, settings.max_attempts)]
    assert all(c / 2 <= d <= c for c, d in zip(ceilings, delays, strict=True))
    assert delays[:4] == sorted(delays[:4]), "until the cap each delay is at least the one before"
    assert delays[2] > delays[0] * 1.5
    assert max(delays) <= timedelta(milliseconds=backoff.cap_ms)

    outcome = await relay.run_once()
    assert outcome.dead == 1
    row = await outbox_row(db, key)
    assert (row["state"], row["attempts"]) == ("dead", settings.max_attempts)


# (d) requeue ------------------------------------------------------------------------------------------------


async def test_requeued_dead_signal_is_delivered_once_its_parent_exists(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    client = await app_client(aiohttp_client, make_config(relay=replace(TEST_RELAY, max_attempts=2)))
    iid = str(uuid.uuid4())
    signal_id = await post_signal(client, iid)
    dead = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["state"] == "dead")
    await insert_interaction(db, iid)
    assert await outbox_admin.requeue(db, OUTBOX_NAMES, [dead["seq"] + 1000]) == [], (
        "only dead rows are requeued"
    )
    assert await outbox_admin.requeue(db, OUTBOX_NAMES, [dead["seq"]]) == [dead["seq"]]
    row = await wait_for(lambda: outbox_row(db, signal_id), lambda row: row["state"] == "delivered")
    # The same row, moved to the log of delivered rows with the fields of its payload the status shows.
    assert row["seq"] == dead["seq"] and row["attempts"] == 1 and row["dead_at"] is None
    assert row["payload"] == {
        "signal": dead["payload"]["signal"],
        "meta.type": dead["payload"]["meta"]["type"],
    }
    assert await target_count(db, signal_id) == 1
    assert await outbox_admin.requeue(db, OUTBOX_NAMES, [dead["seq"]]) == [], (
        "a delivered row is not requeued"
    )


# (e) idempotent delivery ------------------------------------------------------------------------------------


async def reset_outbox(db: Any, events: list[OutboxEvent]) -> None:
    """As if the relay had written the target and died before marking the outbox: its rows pending again."""
    await fetch(db, "truncate eco_outbox.events_delivered")
    await enqueue(db, events)


async def target_snapshot(db: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    interactions = await fetch(
        db, "select id, tokens_in, tokens_out, latency_ms, meta from analytics.eco_interactions order by id"
    )
    signals = await fetch(
        db,
        "select id, interaction_id, signal, meta, created_at from analytics.eco_passive_signals order by id",
    )
    return interactions, signals


async def test_redelivery_is_idempotent(db: Any) -> None:
    iid = uuid.uuid4()
    row = InteractionRow(id=iid, created_at=datetime.now(UTC), session_id="s", message_id="m-1")
    done = replace(row, tokens_in=3, tokens_out=9, latency_ms=120, meta={"finish_reason": "stop"})
    events = [
        interaction_event(row),
        completion_event(done),
        *(signal_event(iid, f"s{i}", {"i": i}) for i in range(3)),
    ]
    await enqueue(db, events)
    relay = Relay(db, db, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES)
    first = await relay.run_once()
    assert (first.claimed, first.delivered) == (5, 5)
    snapshot = await target_snapshot(db)
    assert len(snapshot[0]) == 1 and len(snapshot[1]) == 3
    assert snapshot[0][0][1:4] == (3, 9, 120)

    for _ in range(2):
        await reset_outbox(db, events)
        again = await relay.run_once()
        assert (again.claimed, again.delivered, again.retried, again.dead) == (5, 5, 0, 0)
        assert await target_snapshot(db) == snapshot
    assert await scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'") == 0


async def test_concurrent_relays_never_claim_the_same_row(db: Any) -> None:
    """Two relays over the same rows: each row is delivered by one of them (a row claimed by both at once
    would be counted delivered twice, since re-delivery counts as delivered)."""
    iid = uuid.uuid4()
    events = [
        interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC))),
        *(signal_event(iid, "view", {"i": i}) for i in range(40)),
    ]
    await enqueue(db, events)
    relays = [
        Relay(db, db, ECO_TARGET, replace(TEST_RELAY, batch_size=10), names=OUTBOX_NAMES) for _ in range(2)
    ]
    delivered = 0

    async def both_relays() -> int:
        nonlocal delivered
        outcomes = await asyncio.gather(*(relay.run_once() for relay in relays))
        delivered += sum(outcome.delivered for outcome in outcomes)
        return await scalar(db, f"select count(*) from {OUTBOX_ROWS} where state = 'delivered'")

    await wait_for(both_relays, lambda count: count == len(events))
    assert delivered == len(events)
    assert await scalar(db, "select count(*) from analytics.eco_passive_signals") == 40


async def test_held_rows_are_logged_per_batch_not_per_row(db: Any) -> None:
    """A flood of orphans (anyone may post them) is one log line for the batch that holds them, and one for
    the batch that dead-letters them, each carrying an example row's context and the count."""
    orphans = [signal_event(uuid.uuid4(), f"s{i}", {}) for i in range(50)]
    await enqueue(db, orphans)
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        relay = Relay(
            db, db, ECO_TARGET, replace(TEST_RELAY, max_attempts=2, orphan_max_attempts=2), names=OUTBOX_NAMES
        )
        retried = await relay.run_once()
        await fetch(db, "UPDATE eco_outbox.events SET next_attempt_at = now()")
        dead = await relay.run_once()
    finally:
        logger.remove(sink)

    assert (retried.retried, dead.dead) == (50, 50)
    lines = [r for r in records if r["name"] == "outbox.relay"]
    assert [r["message"].split(" ", 2)[:2] for r in lines] == [["retrying", "50"], ["dead-lettered", "50"]]
    keys = {str(event.key) for event in orphans}
    assert all(r["extra"]["signal"] in keys and r["extra"]["code"] == "parent_missing" for r in lines)
    assert [r["extra"]["attempt"] for r in lines] == [1, 2]
