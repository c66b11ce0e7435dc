"""A long target phase keeps its claim: a slow target (a trigger that sleeps on every row) with refused rows
among the good ones, and a claim timeout shorter than the phase. The relay renews its claim while it works,
so every good row is marked and every refused row charged in that one pass; and its isolation work is
bounded per batch, the rows it did not reach held without a charge for the next pass."""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import aiopg
import psycopg2
import pytest

from outbox.enqueue import OutboxWriter
from outbox.errors import Failure, classify
from outbox.relay import PAUSE_CLAIMED, Relay
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, interaction_event, signal_event
from tests.conftest import TEST_RELAY
from tests.faults.target_probes import deliveries, install_delivery_log
from tests.helpers import OUTBOX_ROWS, fetch
from tests.relay_pauses import Pauses

GOOD = 90
REFUSED = 10
# 100 rows at 5 ms each: the first statement alone outlasts the claim timeout.
ROW_SLEEP_S = 0.005
CLAIM_TIMEOUT_S = 0.3

SLOW_TARGET_SQL = f"""
CREATE FUNCTION public.slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep({ROW_SLEEP_S});
    RETURN NEW;
END $$;
CREATE TRIGGER slow_row BEFORE INSERT ON analytics.eco_passive_signals
    FOR EACH ROW EXECUTE FUNCTION public.slow_row();
"""
REFUSE_POISON_SQL = (
    "alter table analytics.eco_passive_signals add constraint no_poison check (meta ->> 'poison' is null)"
)


async def backlog(db: aiopg.Pool) -> None:
    """A delivered interaction, then its signals, every tenth one refused by the target."""
    iid = uuid.uuid4()
    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        await writer.enqueue([interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC)))])
        assert (await Relay(db, db, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES).run_once()).delivered == 1
        signals = [
            signal_event(iid, "poison", {"poison": True}) if i % 10 == 3 else signal_event(iid, "view", {})
            for i in range(GOOD + REFUSED)
        ]
        await writer.enqueue(signals)
    finally:
        await writer.close()


async def signal_states(db: aiopg.Pool) -> list[tuple[object, ...]]:
    return await fetch(
        db,
        # The signal's name, which the log of delivered rows keeps of the payload.
        "select state, attempts, payload->>'signal' = 'poison', split_part(last_error, ':', 1), count(*)"
        f" from {OUTBOX_ROWS} where kind = 'signal' group by 1, 2, 3, 4 order by 1, 3",
    )


async def test_a_slow_target_phase_keeps_its_claim(db: aiopg.Pool) -> None:
    await fetch(db, SLOW_TARGET_SQL)
    await fetch(db, REFUSE_POISON_SQL)
    await backlog(db)
    relay = Relay(
        db, db, ECO_TARGET, replace(TEST_RELAY, claim_timeout_s=CLAIM_TIMEOUT_S), names=OUTBOX_NAMES
    )

    outcome = await relay.run_once()

    assert (outcome.claimed, outcome.delivered, outcome.retried) == (GOOD + REFUSED, GOOD, REFUSED)
    assert await signal_states(db) == [
        ("delivered", 1, False, None, GOOD),
        ("pending", 1, True, "23514", REFUSED),
    ]
    assert await fetch(db, "select count(*) from analytics.eco_passive_signals") == [(GOOD,)]


async def test_isolation_is_bounded_per_batch_and_goes_on_in_the_next_pass(db: aiopg.Pool) -> None:
    await fetch(db, REFUSE_POISON_SQL)
    await backlog(db)
    # Enough to reach one refused row wherever the batch puts them (at most two statements a level on the
    # way down, after the first), too few to reach them all (their splits alone take more).
    budget = 2 * math.ceil(math.log2(GOOD + REFUSED)) + 1
    relay = Relay(
        db,
        db,
        ECO_TARGET,
        replace(TEST_RELAY, max_attempts=1, isolation_statements=budget),
        names=OUTBOX_NAMES,
    )

    first = await relay.run_once()
    # The first statement is refused; the budget runs out before every refused row is found.
    assert 0 < first.dead < REFUSED
    rows = await fetch(
        db, "select count(*) from eco_outbox.events where last_error = 'not_isolated' and attempts = 0"
    )
    assert rows[0][0] > 0
    for _ in range(REFUSED * 2):
        if not (await relay.run_once()).claimed:
            break
    assert await signal_states(db) == [
        ("dead", 1, True, "23514", REFUSED),
        ("delivered", 1, False, None, GOOD),
    ]


async def test_a_relay_that_lost_its_claim_before_writing_writes_nothing(db: aiopg.Pool) -> None:
    """Frozen right after its claim was read, past the claim timeout: the server ended the claim and another
    relay may own the rows. Woken, the relay must not write them: the target transaction passes the claim's
    fence before it commits, fails there, and rolls back; the batch fails as an outage, no row is charged."""
    await install_delivery_log(db)
    await backlog(db)
    pauses = Pauses(PAUSE_CLAIMED)
    relay = Relay(db, db, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES, pause=pauses)
    batch = asyncio.create_task(relay.run_once())
    await pauses.reached(PAUSE_CLAIMED)
    # What the server's idle timeout does to a frozen relay's claim.
    killed = await fetch(
        db,
        "select pg_terminate_backend(pid) from pg_stat_activity"
        " where datname = current_database() and state = 'idle in transaction'",
    )
    assert killed == [(True,)]
    pauses.resume(PAUSE_CLAIMED)

    with pytest.raises(psycopg2.Error) as failed:
        await batch

    assert classify(failed.value) is Failure.OUTAGE
    assert await deliveries(db) == {}
    assert await fetch(db, "select count(*) from analytics.eco_passive_signals") == [(0,)]
    assert await signal_states(db) == [("pending", 0, False, None, GOOD), ("pending", 0, True, None, REFUSED)]
