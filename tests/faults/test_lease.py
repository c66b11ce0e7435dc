"""A relay that freezes (SIGSTOP, a paused VM) mid-backlog loses its claim within ECO_RELAY_CLAIM_TIMEOUT_S:
the server ends its idle transactions, their locks go, and the other process delivers every row. When the
frozen one wakes up (SIGCONT), its batch fails on its dead sessions and writes nothing again."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import aiopg
import pytest

from tests.faults.conftest import open_pool, post_backlog, service_env
from tests.faults.target_probes import deliveries, install_brake, install_delivery_log
from tests.helpers import scalar, wait_for
from tests.loss_checker import LossChecker
from tests.service_process import ServiceProcess

BACKLOG = 1500
REQUEST_ROWS = 50
BRAKE_S = 0.05
RELAY_BATCH = 25
CLAIM_TIMEOUT_S = 2.0
FREEZE_TRIES = 10

# Sessions of the service with a transaction open: a frozen relay's claim (outbox) or its write (target).
OPEN_TRANSACTIONS_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""


async def written(pool: aiopg.Pool) -> int:
    return await scalar(pool, "select count(*) from analytics.eco_passive_signals")


async def freeze_mid_batch(process: ServiceProcess, pool: aiopg.Pool) -> None:
    """SIGSTOP the process while it holds a claim: if it froze between two batches, let it go on a little
    (until it has written more) and freeze it again."""
    for _ in range(FREEZE_TRIES):
        process.send(signal.SIGSTOP)
        if await scalar(pool, OPEN_TRANSACTIONS_SQL) > 0:
            return
        before = await written(pool)
        process.send(signal.SIGCONT)
        await wait_for(lambda: written(pool), lambda count, at=before: count > at, timeout_s=30)
    raise AssertionError(f"never froze inside a batch in {FREEZE_TRIES} tries")


async def relay_loops_succeeded_since(session: aiohttp.ClientSession, url: str, since: float) -> bool:
    """Each relay loop finished a pass after `since` (monotonic): the batch it was frozen in is over."""
    async with session.get(f"{url}/readyz") as resp:
        loops = (await resp.json())["loops"]
    relay = [loop for name, loop in loops.items() if name.startswith("outbox-relay-")]
    elapsed = time.monotonic() - since
    return bool(relay) and all(
        loop["last_success_age_s"] is not None and loop["last_success_age_s"] < elapsed for loop in relay
    )


@pytest.mark.slow
async def test_a_frozen_relay_loses_its_claim_to_the_other(shared_db: str, tmp_path: Path) -> None:
    env = service_env(
        shared_db,
        ECO_RELAY_BATCH=str(RELAY_BATCH),
        ECO_RELAY_WORKERS="2",
        ECO_RELAY_CLAIM_TIMEOUT_S=str(CLAIM_TIMEOUT_S),
    )
    frozen = ServiceProcess(env, tmp_path / "frozen.log")
    other = ServiceProcess(env, tmp_path / "other.log")
    pool = await open_pool(shared_db)
    try:
        await install_delivery_log(pool)
        await install_brake(pool, BRAKE_S)
        await frozen.start()
        checker = LossChecker()
        async with aiohttp.ClientSession() as session:
            parents = await post_backlog(session, frozen.url, checker, BACKLOG, REQUEST_ROWS)
            await wait_for(lambda: written(pool), lambda count: count >= BACKLOG // 10, timeout_s=30)
            await freeze_mid_batch(frozen, pool)
            assert await written(pool) < BACKLOG, "the freeze must land before the backlog is relayed"

            await other.start()
            await checker.wait_settled(pool, timeout_s=90)
            assert frozen.process is not None and frozen.process.returncode is None
            report = await checker.verify(pool, pool)
            assert (report.delivered, report.dead) == (BACKLOG, 3)
            # A batch the frozen relay had committed to the target but not marked is written again: at most
            # twice, as after a crash, and stored once.
            settled = await deliveries(pool)
            assert max(settled.values()) <= 2

            woken_at = time.monotonic()
            frozen.send(signal.SIGCONT)
            await wait_for(
                lambda: relay_loops_succeeded_since(session, frozen.url, woken_at),
                timeout_s=30,
                interval_s=0.1,
            )
            # The woken relay wrote nothing more, and works again.
            assert await deliveries(pool) == settled
            late = checker.body(parents[0], late=True)
            assert await checker.post(session, frozen.url, [late]) == 202
            await checker.wait_settled(pool)
        report = await checker.verify(pool, pool)
        assert (report.delivered, report.dead) == (BACKLOG + 1, 3)
        assert await scalar(pool, "select count(*) from eco_outbox.events where state = 'pending'") == 0
    finally:
        if frozen.process is not None and frozen.process.returncode is None:
            frozen.send(signal.SIGCONT)
        await asyncio.gather(frozen.stop(), other.stop())
        pool.close()
        await pool.wait_closed()
