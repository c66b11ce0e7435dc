"""Databases that go away and come back, for real (their servers are stopped and started again).

Target down: intake only needs the outbox, so it keeps answering 202; the relay counts the outage against
no row (nothing uses up attempts, nothing is dead-lettered), pauses, and delivers everything once the target
is back. Outbox down: intake answers 503 with Retry-After, the process stays up, and the same app answers
202 again once the database returns — its pools, its relay and its LISTEN connection recover by themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import aiopg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from service.app import create_app
from tests import conftest
from tests.conftest import TEST_RELAY
from tests.faults.conftest import FaultDatabases, open_pool
from tests.helpers import fetch, probe, scalar, wait_for
from tests.loss_checker import FEEDBACK, MODULE_USAGE, LossChecker
from tests.pgcluster import PgCluster

SIGNALS_DURING_OUTAGE = 40
# Relay passes that must fail on the outage before the target comes back.
OUTAGE_PASSES = 3
# A row that spent its attempts on the outage would be dead after this many.
MAX_ATTEMPTS = 2


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


def relay_outages() -> float:
    return REGISTRY.get_sample_value("eco_outbox_relay_outages_total") or 0.0


async def ask(client: TestClient) -> str:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"})
    assert resp.status == 200, await resp.text()
    return resp.headers["X-Eco-Interaction-Id"]


@pytest.mark.slow
async def test_target_down_intake_goes_on_and_relay_resumes(
    split_dbs: FaultDatabases,
    pools: tuple[aiopg.Pool, aiopg.Pool],
    target_server: PgCluster,
    aiohttp_client: Any,
) -> None:
    outbox, target = pools
    settings = replace(TEST_RELAY, max_attempts=MAX_ATTEMPTS, outage_pause_max_s=0.3)
    config = conftest.test_config(
        split_dbs.outbox_dsn, target_database_url=split_dbs.target_dsn, relay=settings
    )
    client = await aiohttp_client(create_app(config))
    checker = LossChecker()
    before = await ask(client)
    assert await checker.post(client.session, base_url(client), [checker.body(before)]) == 202
    await checker.wait_settled(outbox)  # the relay's target pool now holds connections the stop will break

    target_server.stop(mode="immediate")
    outages = relay_outages()
    during = await ask(client)
    for i in range(SIGNALS_DURING_OUTAGE):
        body = checker.body(during if i % 2 else before, i=i)
        assert await checker.post(client.session, base_url(client), [body]) == 202
    for kind in (FEEDBACK, MODULE_USAGE):
        assert await checker.post_child(client.session, base_url(client), kind, during) == 204
    await wait_for(probe(relay_outages), lambda count: count >= outages + OUTAGE_PASSES, timeout_s=20)
    # Held back by the outage, not by their own fault: all pending, no attempt counted.
    held = await fetch(
        outbox,
        "select state, attempts, count(*) from eco_outbox.events where state <> 'delivered' group by 1, 2",
    )
    assert len(held) == 1 and held[0][:2] == ("pending", 0) and held[0][2] > SIGNALS_DURING_OUTAGE, held

    target_server.start()
    await checker.wait_settled(outbox)
    report = await checker.verify(outbox, target)
    assert (report.delivered, report.dead) == (SIGNALS_DURING_OUTAGE + 1 + 2, 0)
    await wait_for(
        lambda: scalar(outbox, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda count: count == 0,
    )
    assert (
        await scalar(target, "select count(*) from analytics.eco_interactions where id = %s", (during,)) == 1
    )


async def listeners(pool: aiopg.Pool) -> int:
    return await scalar(
        pool,
        "select count(*) from pg_stat_activity"
        " where datname = current_database() and query ilike 'LISTEN %%'",
    )


@pytest.mark.slow
async def test_outbox_down_answers_503_then_recovers_alone(
    shared_db: str, outbox_server: PgCluster, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(create_app(conftest.test_config(shared_db)))
    pool = await open_pool(shared_db)
    try:
        checker = LossChecker()
        parent = await ask(client)
        assert await checker.post(client.session, base_url(client), [checker.body(parent)]) == 202
        await wait_for(lambda: listeners(pool), lambda count: count == 1)

        outbox_server.stop()
        resp = await client.post("/api/signal", json=checker.body(parent))
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"] == "database_unavailable"
        resp = await client.post("/api/ask-eco", json={"message": "Olá"})
        assert resp.status == 503 and "Retry-After" in resp.headers
        for i in range(5):
            assert await checker.post(client.session, base_url(client), [checker.body(parent, i=i)]) == 503
        # A vote or a module usage refused with a 503 is not stored either (the checker verifies it).
        for kind in (FEEDBACK, MODULE_USAGE):
            assert await checker.post_child(client.session, base_url(client), kind, parent) == 503
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503

        outbox_server.start()

        async def accepted() -> int | None:
            return await checker.post(client.session, base_url(client), [checker.body(parent)])

        await wait_for(accepted, lambda status: status == 202, timeout_s=20, interval_s=0.1)
        assert (await client.get("/readyz")).status == 200
        for i in range(5):
            assert await checker.post(client.session, base_url(client), [checker.body(parent, i=i)]) == 202
        # The relay delivers again, and the NOTIFY listener has reconnected by itself.
        await checker.wait_settled(pool)
        report = await checker.verify(pool, pool)
        assert report.delivered == len(checker.acknowledged) >= 7
        assert report.rejected >= 5 + 2
        await wait_for(lambda: listeners(pool), lambda count: count == 1)
    finally:
        pool.close()
        await pool.wait_closed()


MAX_AGE_S = 2.0
OUTAGE_PARENTS = 20
OUTAGE_SIGNALS = 400
ORPHANS = 3


@pytest.mark.slow
async def test_an_outage_twice_the_max_age_kills_no_deliverable_signal(
    split_dbs: FaultDatabases,
    pools: tuple[aiopg.Pool, aiopg.Pool],
    target_server: PgCluster,
    aiohttp_client: Any,
) -> None:
    """The outage spends no row's attempts; after it, with small batches in three loops, signals are claimed
    apart from their parents: one whose parent is still pending is not charged, and one that died waiting
    for a parent that then lands is revived. Only the orphans die."""
    outbox, target = pools
    settings = replace(
        TEST_RELAY, max_age_s=MAX_AGE_S, batch_size=7, loops=3, outage_pause_max_s=0.3, coalesce_ms=0.0
    )
    config = conftest.test_config(
        split_dbs.outbox_dsn, target_database_url=split_dbs.target_dsn, relay=settings, rate_limit_per_s=0.0
    )
    client = await aiohttp_client(create_app(config))
    checker = LossChecker()
    await ask(client)
    # The relay's target pool now holds connections the stop will break.
    await wait_for(
        lambda: scalar(outbox, "select count(*) from eco_outbox.events where state = 'pending'"),
        lambda count: count == 0,
    )

    target_server.stop(mode="immediate")
    parents = [await ask(client) for _ in range(OUTAGE_PARENTS)]
    bodies = [checker.body(parents[i % OUTAGE_PARENTS], i=i) for i in range(OUTAGE_SIGNALS)]
    orphan = str(uuid.uuid4())
    bodies += [checker.body(orphan, orphan=True) for _ in range(ORPHANS)]
    for start in range(0, len(bodies), 10):
        assert await checker.post(client.session, base_url(client), bodies[start : start + 10]) == 202

    async def oldest_pending_age_s() -> float:
        age = await scalar(
            outbox,
            "select extract(epoch from now() - min(created_at))::float8 from eco_outbox.events"
            " where state = 'pending'",
        )
        return age or 0.0

    await wait_for(oldest_pending_age_s, lambda age: age >= 2 * MAX_AGE_S, timeout_s=30, interval_s=0.1)
    charged = await scalar(
        outbox, "select count(*) from eco_outbox.events where state = 'pending' and attempts > 0"
    )
    assert charged == 0

    target_server.start()
    await checker.wait_settled(outbox, timeout_s=60)
    report = await checker.verify(outbox, target)
    assert (report.delivered, report.dead) == (OUTAGE_SIGNALS, ORPHANS)
    dead = await fetch(
        outbox, "select kind, key::text, last_error from eco_outbox.events where state = 'dead'"
    )
    assert len(dead) == ORPHANS, dead
