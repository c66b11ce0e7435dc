"""TARGET_DATABASE_URL on another server than the outbox: the service works end to end across two real
servers, and a relay that dies after the target committed but before the outbox did re-delivers the batch
without a duplicate, since every target write is keyed by the row's id."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiopg
import pytest
from aiohttp.test_utils import TestClient

from outbox.errors import CONNECTION_ERRORS
from outbox.relay import ClaimedRow, Fence, Relay
from outbox.target import DeliveryResult
from service.app import create_app
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, completion_event, interaction_event, signal_event
from tests import conftest
from tests.conftest import TEST_RELAY
from tests.faults.conftest import FaultDatabases, enqueue, open_pool
from tests.faults.target_probes import deliveries, install_delivery_log
from tests.helpers import OUTBOX_ROWS, fetch, scalar
from tests.loss_checker import LossChecker


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_service_with_target_on_another_server(
    split_dbs: FaultDatabases, pools: tuple[aiopg.Pool, aiopg.Pool], aiohttp_client: Any
) -> None:
    outbox, target = pools
    config = conftest.test_config(split_dbs.outbox_dsn, target_database_url=split_dbs.target_dsn)
    client = await aiohttp_client(create_app(config))
    resp = await client.post("/api/ask-eco", json={"message": "Olá", "client_message_id": "m-1"})
    assert resp.status == 200, await resp.text()
    parent = resp.headers["X-Eco-Interaction-Id"]
    checker = LossChecker()
    for i in range(5):
        assert await checker.post(client.session, base_url(client), [checker.body(parent, i=i)]) == 202
    await checker.wait_settled(outbox)
    report = await checker.verify(outbox, target)
    assert report.delivered == 5

    # The interaction and its completion merged into one row, and the service's telemetry, on the target.
    row = await fetch(
        target, "select message_id, tokens_out from analytics.eco_interactions where id = %s", (parent,)
    )
    assert row[0][0] == "m-1" and row[0][1] > 0
    names = {r[0] for r in await fetch(target, "select signal from analytics.eco_passive_signals")}
    assert {"prompt_ready", "first_token", "done", "view"} <= names
    # Each server holds only its own part of the schema.
    assert await scalar(outbox, "select to_regclass('analytics.eco_passive_signals') is null")
    assert await scalar(target, "select to_regclass('eco_outbox.events') is null")
    assert await scalar(outbox, "select count(*) from eco_outbox.events where state <> 'delivered'") == 0


class DiesBeforeMarking(Relay):
    """A relay whose outbox session is killed by the server once the target batch has committed and before
    the rows are marked, as when its process dies at that instant: the claim's transaction is lost."""

    def __init__(self, outbox: aiopg.Pool, target: aiopg.Pool, killer: aiopg.Pool) -> None:
        super().__init__(outbox, target, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES)
        self._killer = killer

    async def _deliver(self, rows: list[ClaimedRow], fence: Fence) -> dict[str, DeliveryResult]:
        results = await super()._deliver(rows, fence)
        killed = await fetch(
            self._killer,
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = current_database() and state = 'idle in transaction'",
        )
        assert killed == [(True,)]
        return results


async def test_crash_between_target_write_and_outbox_mark_redelivers_once(
    split_dbs: FaultDatabases, pools: tuple[aiopg.Pool, aiopg.Pool]
) -> None:
    outbox, target = pools
    await install_delivery_log(target)
    iid = uuid.uuid4()
    row = InteractionRow(id=iid, created_at=datetime.now(UTC), message_id="m-crash")
    signals = [signal_event(iid, "view", {"i": i}) for i in range(20)]
    events = [interaction_event(row), completion_event(replace(row, tokens_out=7)), *signals]
    await enqueue(outbox, events)

    relay_outbox, relay_target = await open_pool(split_dbs.outbox_dsn), await open_pool(split_dbs.target_dsn)
    try:
        with pytest.raises(CONNECTION_ERRORS):
            await DiesBeforeMarking(relay_outbox, relay_target, outbox).run_once()
        # Written to the target, yet still pending in the outbox, with no attempt counted.
        assert await deliveries(target) == {str(event.key): 1 for event in signals}
        states = await fetch(outbox, f"select state, attempts, count(*) from {OUTBOX_ROWS} group by 1, 2")
        assert states == [("pending", 0, len(events))]

        again = await Relay(relay_outbox, relay_target, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES).run_once()
        assert (again.claimed, again.delivered, again.retried, again.dead) == (len(events), len(events), 0, 0)
    finally:
        for pool in (relay_outbox, relay_target):
            pool.close()
            await pool.wait_closed()

    # Delivered a second time, stored once.
    assert await deliveries(target) == {str(event.key): 2 for event in signals}
    assert await scalar(target, "select count(*) from analytics.eco_passive_signals") == len(signals)
    assert await fetch(target, "select count(*), max(tokens_out) from analytics.eco_interactions") == [(1, 7)]
    states = await fetch(outbox, f"select state, attempts, count(*) from {OUTBOX_ROWS} group by 1, 2")
    assert states == [("delivered", 1, len(events))]


async def test_signal_refused_by_a_foreign_key_leaves_the_rest_of_the_batch_delivered(
    split_dbs: FaultDatabases, pools: tuple[aiopg.Pool, aiopg.Pool]
) -> None:
    """The parent vanishes between the relay's check and its insert (a trigger deletes it, as a concurrent
    delete would): the signals' insert fails with 23503, only its savepoint is undone, and the interaction
    written earlier in the same target transaction stays delivered while the signal waits for a retry."""
    outbox, target = pools
    await fetch(
        target,
        """
        CREATE FUNCTION public.drop_parent() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM analytics.eco_interactions WHERE id = NEW.interaction_id;
            RETURN NEW;
        END $$;
        CREATE TRIGGER drop_parent BEFORE INSERT ON analytics.eco_passive_signals
            FOR EACH ROW WHEN (NEW.signal = 'doomed') EXECUTE FUNCTION public.drop_parent();
        """,
    )
    iid = uuid.uuid4()
    doomed = signal_event(iid, "doomed", {})
    await enqueue(outbox, [interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC))), doomed])

    outcome = await Relay(outbox, target, ECO_TARGET, TEST_RELAY, names=OUTBOX_NAMES).run_once()
    assert (outcome.claimed, outcome.delivered, outcome.retried) == (2, 1, 1)
    assert (
        await scalar(target, "select count(*) from analytics.eco_interactions where id = %s", (str(iid),))
        == 1
    )
    assert await scalar(target, "select count(*) from analytics.eco_passive_signals") == 0
    assert await fetch(
        outbox, f"select state, attempts, last_error from {OUTBOX_ROWS} where key = %s", (str(doomed.key),)
    ) == [("pending", 1, "fk_violation")]
