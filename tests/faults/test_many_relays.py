"""Several relays over one outbox — loops in one process, and separate service processes — write every row
to the target once: claims lock rows with FOR UPDATE SKIP LOCKED, so no two relays ever hold the same row,
and none is left behind. The target's delivery log (a trigger) counts real writes, not the relays' word."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiopg
import pytest

from outbox.relay import Relay
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, interaction_event, signal_event
from tests.conftest import TEST_RELAY
from tests.faults.conftest import ask, enqueue, open_pool, service_env
from tests.faults.target_probes import deliveries, install_delivery_log
from tests.helpers import OUTBOX_ROWS, scalar, wait_for
from tests.loss_checker import LossChecker
from tests.service_process import ServiceProcess

RELAYS = 3
WORKERS_PER_RELAY = 3
INTERACTIONS = 20
SIGNALS = 300


async def delivered_count(outbox: aiopg.Pool) -> int:
    return await scalar(outbox, f"select count(*) from {OUTBOX_ROWS} where state = 'delivered'")


async def test_relay_loops_in_one_process_deliver_every_row_once(
    pools: tuple[aiopg.Pool, aiopg.Pool],
) -> None:
    outbox, target = pools
    await install_delivery_log(target)
    parents = [uuid.uuid4() for _ in range(INTERACTIONS)]
    signals = [signal_event(parents[i % INTERACTIONS], "view", {"i": i}) for i in range(SIGNALS)]
    interactions = [
        interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC))) for iid in parents
    ]
    # Half the signals are queued before their parents (they wait and are released), half after.
    await enqueue(outbox, signals[: SIGNALS // 2], interactions, signals[SIGNALS // 2 :])
    total = SIGNALS + INTERACTIONS

    settings = replace(TEST_RELAY, batch_size=7, loops=WORKERS_PER_RELAY)
    relays = [Relay(outbox, target, ECO_TARGET, settings, names=OUTBOX_NAMES) for _ in range(RELAYS)]
    for relay in relays:
        relay.start()
    try:
        await wait_for(lambda: delivered_count(outbox), lambda count: count == total, timeout_s=30)
    finally:
        for relay in relays:
            await relay.stop()

    assert await deliveries(target) == {str(event.key): 1 for event in signals}
    assert await scalar(target, "select count(*) from analytics.eco_interactions") == INTERACTIONS
    assert await scalar(outbox, "select count(*) from eco_outbox.events where state <> 'delivered'") == 0


@pytest.mark.slow
async def test_service_processes_share_one_outbox_without_duplicates(shared_db: str, tmp_path: Path) -> None:
    processes = [
        ServiceProcess(service_env(shared_db, ECO_RELAY_BATCH="20"), tmp_path / f"service-{i}.log")
        for i in range(RELAYS)
    ]
    pool = await open_pool(shared_db)
    try:
        await install_delivery_log(pool)
        await asyncio.gather(*(process.start() for process in processes))
        checker = LossChecker()
        async with aiohttp.ClientSession() as session:
            parents = [await ask(session, processes[i % RELAYS].url) for i in range(6)]
            orphan = str(uuid.uuid4())
            bodies: list[dict[str, Any]] = [
                checker.body(parents[i % len(parents)], i=i) for i in range(SIGNALS)
            ]
            bodies += [checker.body(orphan, orphan=True) for _ in range(3)]
            statuses = await asyncio.gather(
                *(
                    checker.post(session, processes[n % RELAYS].url, bodies[start : start + 10])
                    for n, start in enumerate(range(0, len(bodies), 10))
                )
            )
        assert set(statuses) == {202}
        await checker.wait_settled(pool)
        report = await checker.verify(pool, pool)
        assert (report.delivered, report.dead) == (SIGNALS, 3)
        # Every signal written once: the client's and the service's own telemetry (prompt_ready, ...).
        written = await deliveries(pool)
        assert set(checker.acknowledged) - {key for key, count in written.items() if count == 1} == {
            body["signal_id"] for body in bodies[SIGNALS:]
        }
        assert set(written.values()) == {1}
    finally:
        await asyncio.gather(*(process.stop() for process in processes))
        pool.close()
        await pool.wait_closed()
