"""The server cancels and terminates the service's sessions every half second while clients post signals:
aiopg turns a cancel (pg_cancel_backend, statement_timeout) into CancelledError and a terminate into a lost
connection. No loop dies of it (intake flushers, relay loops, listener, purger), no request hangs, every
request answered 202 is delivered once, and every one answered otherwise is stored nowhere."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiopg
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.config import Config
from tests.conftest import TEST_RELAY
from tests.faults.conftest import open_pool
from tests.helpers import probe, wait_for
from tests.loss_checker import LossChecker

KILL_INTERVAL_S = 0.5
ROUNDS = 10
POSTERS = 4
REQUEST_ROWS = 5
# Far above any answer under this load: a request still open after it has hung.
REQUEST_TIMEOUT_S = 30.0
# Progress the service must make between two rounds: it recovers from each.
ACKNOWLEDGED_PER_ROUND = 20

# Every session of the service on this database: its pools (intake, relay, target) and its LISTEN.
KILL_SQL = """
SELECT count(*) FILTER (WHERE {function}(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def ask(client: TestClient) -> str:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"})
    assert resp.status == 200, await resp.text()
    await resp.read()
    return resp.headers["X-Eco-Interaction-Id"]


async def test_cancel_and_terminate_every_half_second_under_load(
    make_config: Callable[..., Config], aiohttp_client: Any, database_url: str
) -> None:
    config = make_config(relay=replace(TEST_RELAY, batch_size=50), rate_limit_per_s=0.0)
    client = await aiohttp_client(create_app(config))
    checker = LossChecker()
    parents = [await ask(client) for _ in range(3)]
    stopping = asyncio.Event()
    statuses: Counter[int | None] = Counter()

    async def post_until_stopped(poster: int) -> None:
        for i in range(1_000_000):
            if stopping.is_set():
                return
            bodies = [checker.body(parents[(i + n) % 3], poster=poster, i=i) for n in range(REQUEST_ROWS)]
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                statuses[await checker.post(client.session, base_url(client), bodies)] += 1

    posters = [asyncio.create_task(post_until_stopped(n)) for n in range(POSTERS)]
    hits: Counter[str] = Counter()
    killer = await aiopg.connect(database_url, enable_hstore=False)
    try:
        async with killer.cursor() as cur:
            for round_ in range(ROUNDS):
                function = "pg_cancel_backend" if round_ % 2 == 0 else "pg_terminate_backend"
                await cur.execute(KILL_SQL.format(function=function))
                hits[function] += (await cur.fetchone())[0]
                acknowledged = len(checker.acknowledged)
                await wait_for(
                    probe(lambda: len(checker.acknowledged)),
                    lambda n, at_least=acknowledged + ACKNOWLEDGED_PER_ROUND: n >= at_least,
                    timeout_s=20,
                )
                # The chaos's rhythm, not a synchronisation: the service is under load in between.
                await asyncio.sleep(KILL_INTERVAL_S)
    finally:
        stopping.set()
        await asyncio.gather(*posters)
        killer.close()
    assert hits["pg_cancel_backend"] > 0 and hits["pg_terminate_backend"] > 0
    # Each request was answered (no hang, no dropped connection), 202 or a 503 to retry.
    assert set(statuses) <= {202, 503}, statuses
    assert statuses[202] > ROUNDS * ACKNOWLEDGED_PER_ROUND // REQUEST_ROWS

    pool = await open_pool(database_url)
    try:
        await checker.wait_settled(pool, timeout_s=60)
        report = await checker.verify(pool, pool)
        assert report.delivered == report.acknowledged and report.dead == 0
        assert report.unanswered == 0
    finally:
        pool.close()
        await pool.wait_closed()
    # Every loop is up again.
    ready = await wait_for(lambda: client.get("/readyz"), lambda resp: resp.status == 200, timeout_s=20)
    loops = (await ready.json())["loops"]
    assert all(loop["running"] for loop in loops.values()), loops
