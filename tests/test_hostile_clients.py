"""A hostile client at the rate limit posting orphans (signals for interactions nobody created) beside an
ordinary client: the ordinary signals still land promptly, and the hostile rows in the outbox, pending or
dead, stay under a bound the settings give (orphans die after their own few attempts, dead rows are purged
after their own retention). Production relay settings, except for the two bounds, which are short so that
the purge shows within the test."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from ipaddress import ip_network

import aiopg
import pytest
from aiohttp.test_utils import TestClient

from outbox.relay import RelaySettings
from outbox.retention import PurgeSettings
from tests.helpers import OUTBOX_ROWS, fetch, read_sse, scalar, wait_for
from tests.loss_checker import LossChecker

HOSTILE = "198.51.100.66"
RATE_PER_S = 50.0
BURST = 200.0
BATCH = 100
DURATION_S = 12.0
RELAY = replace(RelaySettings(), orphan_max_attempts=4)
PURGE = PurgeSettings(dead_retention_s=1.0, interval_s=0.5)
# Slack for the relay's scheduling of each attempt and for the purger's round.
SLACK_S = 1.5
P99_BOUND_S = 2.0


def orphan_lifetime_s(settings: RelaySettings) -> float:
    """Longest an orphan stays pending: the longest backoff before each attempt but the last."""
    backoff = settings.backoff
    return sum(
        min(backoff.cap_ms, backoff.base_ms * 2 ** (attempt - 1)) / 1000
        for attempt in range(1, settings.orphan_max_attempts)
    )


def hostile_rows_bound(settings: RelaySettings, purge: PurgeSettings) -> float:
    """Rows of the hostile client the outbox may hold at once: what the limit lets in over an orphan's life,
    its time dead and a purge round, plus a burst."""
    window_s = orphan_lifetime_s(settings) + purge.dead_retention_s + purge.interval_s + SLACK_S
    return BURST + RATE_PER_S * window_s


async def post_orphans(client: TestClient, stop: asyncio.Event, accepted: list[int]) -> None:
    """At the limit: a batch whenever the bucket holds one, checked every 100 ms."""
    while not stop.is_set():
        bodies = [{"interaction_id": str(uuid.uuid4()), "name": "view", "meta": {"hostile": True}}] * BATCH
        resp = await client.post("/api/signal", json=bodies, headers={"X-Forwarded-For": HOSTILE})
        if resp.status == 202:
            accepted.append(BATCH)
        else:
            assert resp.status == 429, await resp.text()
        await asyncio.sleep(0.1)


async def post_ordinary(client: TestClient, checker: LossChecker, stop: asyncio.Event) -> None:
    url = str(client.make_url("")).rstrip("/")
    while not stop.is_set():
        resp = await client.post(
            "/api/ask-eco", json={"message": "Olá"}, headers={"Accept": "text/event-stream"}
        )
        assert resp.status == 200
        await read_sse(resp)
        interaction = resp.headers["X-Eco-Interaction-Id"]
        status = await checker.post(client.session, url, [checker.body(interaction, i=i) for i in range(5)])
        assert status == 202
        await asyncio.sleep(0.2)


async def hostile_rows(db: aiopg.Pool) -> int:
    return await scalar(
        db, "select count(*) from eco_outbox.events where payload -> 'meta' ->> 'hostile' = 'true'"
    )


@pytest.mark.slow
async def test_orphans_at_the_limit_neither_delay_ordinary_signals_nor_pile_up(make_client, db) -> None:
    # When each signal reached the target, by the database's clock (as the outbox's created_at is).
    await fetch(
        db,
        "alter table analytics.eco_passive_signals"
        " add column landed_at timestamptz default clock_timestamp()",
    )
    client = await make_client(
        relay=RELAY,
        purge=PURGE,
        rate_limit_per_s=RATE_PER_S,
        rate_limit_burst=BURST,
        trusted_proxies=(ip_network("127.0.0.0/8"),),
    )
    checker = LossChecker()
    stop = asyncio.Event()
    accepted: list[int] = []
    samples: list[int] = []
    loads = [
        asyncio.create_task(post_orphans(client, stop, accepted)),
        asyncio.create_task(post_ordinary(client, checker, stop)),
    ]
    try:
        deadline = asyncio.get_running_loop().time() + DURATION_S
        while asyncio.get_running_loop().time() < deadline:
            samples.append(await hostile_rows(db))
            await asyncio.sleep(0.25)
    finally:
        stop.set()
        await asyncio.gather(*loads)

    bound = hostile_rows_bound(RELAY, PURGE)
    # The limit let in more orphans than the bound over the run: the bound holds because they go.
    assert sum(accepted) > bound, (sum(accepted), bound)
    assert max(samples) <= bound, (max(samples), bound)
    assert sum(accepted) <= BURST + RATE_PER_S * (DURATION_S + 1)

    await checker.wait_settled(db)
    report = await checker.verify(db, db)
    assert report.delivered == report.acknowledged > 20
    latencies = sorted(
        row[0]
        for row in await fetch(
            db,
            "select extract(epoch from s.landed_at - outbox_rows.created_at)"
            f" from analytics.eco_passive_signals s join {OUTBOX_ROWS}"
            " on outbox_rows.kind = 'signal' and outbox_rows.key = s.id"
            " where s.id = any(%s::uuid[])",
            (list(checker.acknowledged),),
        )
    )
    assert len(latencies) == report.acknowledged
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    assert p99 < P99_BOUND_S, (p99, latencies[-5:])
    await wait_for(lambda: hostile_rows(db), lambda rows: rows == 0, timeout_s=bound / RATE_PER_S + 10)
