"""A service process killed with SIGKILL while it relays a backlog (and takes new signals) loses nothing and
duplicates nothing once a new process takes over: the claim's locks die with its sessions, the rows stay
pending, and whatever reached the target before the kill is written again as a no-op."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.faults.conftest import open_pool, post_backlog, service_env
from tests.faults.target_probes import deliveries, install_brake, install_delivery_log
from tests.helpers import probe, scalar, wait_for
from tests.loss_checker import LossChecker
from tests.service_process import ServiceProcess

BACKLOG = 1500
REQUEST_ROWS = 50
# Each insert into the target waits this long, so the backlog takes seconds to relay and the kill lands in it.
BRAKE_S = 0.05
RELAY_BATCH = 25
# Bound on the requests sent around the kill (it stops at the first unanswered one in practice).
MAX_LATE_REQUESTS = 10_000


@pytest.mark.slow
async def test_sigkill_mid_relay_loses_nothing_and_duplicates_nothing(shared_db: str, tmp_path: Path) -> None:
    env = service_env(shared_db, ECO_RELAY_BATCH=str(RELAY_BATCH), ECO_RELAY_WORKERS="2")
    first = ServiceProcess(env, tmp_path / "first.log")
    second = ServiceProcess(env, tmp_path / "second.log")
    pool = await open_pool(shared_db)
    try:
        await install_delivery_log(pool)
        await install_brake(pool, BRAKE_S)
        await first.start()
        checker = LossChecker()
        async with aiohttp.ClientSession() as session:
            parents = await post_backlog(session, first.url, checker, BACKLOG, REQUEST_ROWS)
            backlog = len(checker.acknowledged)

            async def written() -> int:
                return await scalar(pool, "select count(*) from analytics.eco_passive_signals")

            # Mid-backlog: some delivered, most not.
            await wait_for(written, lambda count: count >= BACKLOG // 10, timeout_s=30)

            async def keep_posting() -> None:
                """Intake in flight at the kill: these requests end answered or unanswered, never lost."""
                for _ in range(MAX_LATE_REQUESTS):
                    await checker.post(session, first.url, [checker.body(parents[0], late=True)])

            posting = asyncio.create_task(keep_posting())
            await wait_for(probe(lambda: len(checker.acknowledged)), lambda n: n >= backlog + 5)
            first.send(signal.SIGKILL)
            assert await first.wait(timeout_s=10) == -signal.SIGKILL
            await wait_for(probe(lambda: posting.done() or bool(checker.unanswered)), timeout_s=10)
            posting.cancel()
            await asyncio.gather(posting, return_exceptions=True)
        assert await written() < BACKLOG, "the kill must land before the backlog is relayed"

        await second.start()
        await checker.wait_settled(pool, timeout_s=60)
        report = await checker.verify(pool, pool)
        assert report.dead == 3
        assert report.delivered == report.acknowledged - 3 > BACKLOG
        # Re-delivery happens only for the batches in hand at the kill, and never stores a row twice.
        assert max((await deliveries(pool)).values()) <= 2
        assert await scalar(pool, "select count(*) from eco_outbox.events where state = 'pending'") == 0
    finally:
        await asyncio.gather(first.stop(), second.stop())
        pool.close()
        await pool.wait_closed()
