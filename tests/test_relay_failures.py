"""The relay's failure classes one by one (decided by SQLSTATE), the loops' supervision, and the intake
deadline: a target every row fails on makes the relay not ready without charging a row; a server-side
cancel is told apart from a real one; a loop that dies is restarted; no request waits forever."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiopg
import psycopg2
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from outbox.background import LoopHealth, supervise
from outbox.backoff import Backoff
from outbox.enqueue import OutboxWriter
from outbox.errors import Failure, classify, describe, server_cancelled, sqlstate
from outbox.metrics import outbox_metrics
from outbox.relay import Relay
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, interaction_event, signal_event
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, insert_interaction, probe, scalar, wait_for

NOT_READY_BATCHES = "eco_outbox_relay_batch_failures_total"
# Longer than the test: a second attempt inside it can only come from a wake that ended the pause.
OUTAGE_PAUSE_S = 60.0
WAKE_STORM_S = 2.0


def pg_error(cls: type[psycopg2.Error], pgcode: str | None) -> psycopg2.Error:
    """psycopg2 errors carry their SQLSTATE in a read-only attribute; a subclass sets it for the test."""
    return type(cls.__name__, (cls,), {"pgcode": pgcode})(f"{pgcode} happened")


@pytest.mark.parametrize(
    ("cls", "pgcode", "expected"),
    [
        # psycopg2 raises OperationalError for 54000: the class must come from the SQLSTATE.
        (psycopg2.OperationalError, "54000", Failure.REFUSED),
        (psycopg2.IntegrityError, "23514", Failure.REFUSED),
        (psycopg2.IntegrityError, "23505", Failure.REFUSED),
        (psycopg2.DataError, "22001", Failure.REFUSED),
        (psycopg2.InternalError, "P0001", Failure.REFUSED),
        (psycopg2.OperationalError, "08006", Failure.OUTAGE),
        (psycopg2.OperationalError, "57P01", Failure.OUTAGE),
        (psycopg2.OperationalError, "57P03", Failure.OUTAGE),
        (psycopg2.OperationalError, "57014", Failure.OUTAGE),
        (psycopg2.OperationalError, None, Failure.OUTAGE),
        (psycopg2.InterfaceError, None, Failure.OUTAGE),
        (psycopg2.ProgrammingError, "42P01", Failure.NOT_READY),
        (psycopg2.ProgrammingError, "42501", Failure.NOT_READY),
        (psycopg2.IntegrityError, "23503", Failure.NOT_READY),
    ],
)
def test_failures_are_classed_by_sqlstate(
    cls: type[psycopg2.Error], pgcode: str | None, expected: Failure
) -> None:
    assert classify(pg_error(cls, pgcode)) is expected


def test_a_timeout_is_an_outage() -> None:
    assert classify(TimeoutError()) is Failure.OUTAGE


async def test_a_server_side_cancel_is_told_from_a_real_one(db: aiopg.Pool) -> None:
    """aiopg raises CancelledError for pg_cancel_backend; the task was not cancelled, so the loop goes on."""
    async with db.acquire() as victim, victim.cursor() as cur:
        pid = await victim.get_backend_pid()
        sleeping = asyncio.create_task(cur.execute("select pg_sleep(30)"))
        await wait_for(
            lambda: scalar(db, "select state from pg_stat_activity where pid = %s", (pid,)),
            lambda state: state == "active",
        )
        await fetch(db, "select pg_cancel_backend(%s)", (pid,))

        async def outcome() -> asyncio.CancelledError:
            try:
                await sleeping
            except asyncio.CancelledError as exc:
                return exc
            raise AssertionError("the statement was not cancelled")

        exc = await asyncio.create_task(outcome())
    assert server_cancelled(exc) and sqlstate(exc) == "57014"
    assert describe(exc).startswith("57014: canceling statement")
    assert classify(exc) is Failure.OUTAGE


async def test_a_real_cancel_is_not_a_server_side_one() -> None:
    async def cancelled_here() -> bool:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError as exc:
            return server_cancelled(exc)
        raise AssertionError("not cancelled")

    assert await asyncio.create_task(cancelled_here()) is False


async def test_a_loop_that_dies_is_restarted_and_a_real_cancel_stops_it() -> None:
    health = LoopHealth("test-loop")
    runs = 0
    running_again = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise pg_error(psycopg2.ProgrammingError, "42P01")
        running_again.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise(health, run, outbox_metrics(OUTBOX_NAMES).loop_restarts))
    await asyncio.wait_for(running_again.wait(), timeout=10)
    assert (runs, health.restarts, health.running) == (3, 2, True)
    assert health.last_failure_class == "not_ready"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.running is False


async def post_signal(client: TestClient, iid: str) -> str:
    resp = await client.post("/api/signal", json={"interaction_id": iid, "name": "view"})
    assert resp.status == 202, await resp.text()
    return (await resp.json())["id"]


async def test_a_missing_target_table_makes_the_relay_not_ready_and_charges_no_row(
    make_client: Callable[..., Any], db: aiopg.Pool
) -> None:
    not_ready_before = REGISTRY.get_sample_value(NOT_READY_BATCHES, {"failure": "not_ready"}) or 0.0
    client = await make_client(relay=replace(TEST_RELAY, unhealthy_batches=2, outage_pause_max_s=0.2))
    iid = str(uuid.uuid4())
    await insert_interaction(db, iid)
    await fetch(db, "alter table analytics.eco_passive_signals rename to eco_passive_signals_moved")
    signal_id = await post_signal(client, iid)

    async def readiness() -> tuple[int, dict[str, Any]]:
        resp = await client.get("/readyz")
        return resp.status, await resp.json()

    status, body = await wait_for(readiness, lambda answer: answer[0] == 503, timeout_s=15)
    assert any("42P01" in problem and "outbox-relay" in problem for problem in body["problems"]), body
    failing = [loop for loop in body["loops"].values() if loop["consecutive_failures"] >= 2]
    assert failing and failing[0]["last_failure"]["class"] == "not_ready"
    row = await fetch(db, f"select state, attempts from {OUTBOX_ROWS} where key = %s", (signal_id,))
    assert row == [("pending", 0)]
    assert REGISTRY.get_sample_value(NOT_READY_BATCHES, {"failure": "not_ready"}) >= not_ready_before + 2

    await fetch(db, "alter table analytics.eco_passive_signals_moved rename to eco_passive_signals")
    await wait_for(
        lambda: scalar(db, f"select state from {OUTBOX_ROWS} where key = %s", (signal_id,)),
        lambda state: state == "delivered",
        timeout_s=15,
    )
    await wait_for(readiness, lambda answer: answer[0] == 200, timeout_s=15)


async def test_an_enqueue_past_its_deadline_is_a_503_with_retry_after(
    make_client: Callable[..., Any], database_url: str
) -> None:
    client = await make_client(enqueue_timeout_s=0.3)
    async with aiopg.connect(database_url, enable_hstore=False) as conn, conn.cursor() as cur:
        # The intake INSERT waits on this lock for as long as the transaction lives.
        await cur.execute("BEGIN; LOCK TABLE eco_outbox.events IN ACCESS EXCLUSIVE MODE")
        resp = await client.post("/api/signal", json={"interaction_id": str(uuid.uuid4()), "name": "view"})
        await cur.execute("ROLLBACK")
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"] == "database_unavailable"


async def test_a_signal_dead_of_a_missing_parent_is_revived_when_its_parent_lands(
    make_client: Callable[..., Any], db: aiopg.Pool
) -> None:
    client = await make_client(relay=replace(TEST_RELAY, max_attempts=2))
    iid = uuid.uuid4()
    signal_id = await post_signal(client, str(iid))
    await wait_for(
        lambda: scalar(db, f"select state from {OUTBOX_ROWS} where key = %s", (signal_id,)),
        lambda state: state == "dead",
    )
    # Its parent comes through the outbox, as an ask would send it.
    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        await writer.enqueue([interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC)))])
    finally:
        await writer.close()
    await wait_for(
        lambda: scalar(db, f"select state from {OUTBOX_ROWS} where key = %s", (signal_id,)),
        lambda state: state == "delivered",
    )
    assert (
        await scalar(db, "select count(*) from analytics.eco_passive_signals where id = %s", (signal_id,))
        == 1
    )


async def test_a_signal_whose_parent_is_pending_in_the_outbox_is_not_charged(db: aiopg.Pool) -> None:
    """Its parent is on its way (pending in the outbox, not due yet): the signal waits without spending
    attempts or age, and is delivered once the parent lands."""
    # A max age of 0 would kill any charged row at its first miss; the long cap keeps the waiting signal out
    # of the parent's batch, so only the release can make it due.
    relay = Relay(
        db,
        db,
        ECO_TARGET,
        replace(TEST_RELAY, max_age_s=0.0, backoff=Backoff(base_ms=10, cap_ms=600_000)),
        names=OUTBOX_NAMES,
    )
    iid = uuid.uuid4()
    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        await writer.enqueue([interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC)))])
        await fetch(db, "update eco_outbox.events set next_attempt_at = now() + interval '1 hour'")
        [signal] = await writer.enqueue([signal_event(iid, "view", {})])
    finally:
        await writer.close()
    signal_id = str(signal.event.key)

    outcome = await relay.run_once()
    assert (outcome.claimed, outcome.retried, outcome.dead) == (1, 1, 0)
    row = await fetch(
        db, f"select state, attempts, last_error from {OUTBOX_ROWS} where key = %s", (signal_id,)
    )
    assert row == [("pending", 0, "parent_pending")]

    await fetch(db, "update eco_outbox.events set next_attempt_at = now() where kind = 'interaction'")
    assert (await relay.run_once()).delivered == 1
    # Released by its parent's delivery: due now, not at its wait.
    assert (await relay.run_once()).delivered == 1
    assert await scalar(db, f"select state from {OUTBOX_ROWS} where key = %s", (signal_id,)) == "delivered"


async def test_a_wake_does_not_cut_the_outage_pause_short() -> None:
    """Under intake load a NOTIFY comes every few milliseconds: were each to end the pause, a database that
    just failed would be hit as often. The relay, on a server that refuses connections, fails once and
    pauses; a storm of wakes must not bring a second attempt before the pause ends."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        refused_dsn = f"host=127.0.0.1 port={probe_socket.getsockname()[1]} dbname=none user=none"
    pool = await aiopg.create_pool(refused_dsn, minsize=0, maxsize=1, timeout=5, enable_hstore=False)
    settings = replace(
        TEST_RELAY, loops=1, outage_pause_min_s=OUTAGE_PAUSE_S, outage_pause_max_s=OUTAGE_PAUSE_S
    )
    relay = Relay(pool, pool, ECO_TARGET, settings, names=OUTBOX_NAMES)
    relay.start()
    try:
        [health] = relay.loops
        await wait_for(probe(lambda: health.consecutive_failures), lambda failures: failures == 1)
        assert health.last_failure_class == Failure.OUTAGE
        wakes = 0

        async def storm_and_count() -> int:
            nonlocal wakes
            relay.wake()
            wakes += 1
            return health.consecutive_failures

        # With the pause cut short by a wake, the second failure comes within milliseconds.
        with pytest.raises(AssertionError, match="condition not met"):
            await wait_for(storm_and_count, lambda failures: failures > 1, timeout_s=WAKE_STORM_S)
        assert wakes > 10 and health.consecutive_failures == 1
    finally:
        await relay.stop()
        pool.close()
        await pool.wait_closed()


async def due_now(db: aiopg.Pool) -> None:
    await fetch(db, "update eco_outbox.events set next_attempt_at = now() where state = 'pending'")


async def test_an_orphan_dies_at_its_own_shorter_bound(db: aiopg.Pool) -> None:
    """A signal whose parent is in neither the outbox nor the target dies after `orphan_max_attempts`, far
    below `max_attempts`: the charged attempts decide it, not a timing. (A child whose parent is pending in
    the outbox is not charged at all: the test above.)"""
    relay = Relay(
        db, db, ECO_TARGET, replace(TEST_RELAY, max_attempts=20, orphan_max_attempts=3), names=OUTBOX_NAMES
    )
    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        [orphan] = await writer.enqueue([signal_event(uuid.uuid4(), "view", {})])
    finally:
        await writer.close()
    orphan_id = str(orphan.event.key)
    for attempt in (1, 2):
        await due_now(db)
        assert (await relay.run_once()).retried == 1
        assert await fetch(db, f"select state, attempts from {OUTBOX_ROWS} where key = %s", (orphan_id,)) == [
            ("pending", attempt)
        ]
    await due_now(db)
    assert (await relay.run_once()).dead == 1
    assert await fetch(
        db, f"select state, attempts, last_error from {OUTBOX_ROWS} where key = %s", (orphan_id,)
    ) == [("dead", 3, "parent_missing")]
