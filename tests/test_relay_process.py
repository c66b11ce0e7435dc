"""`serve`, as `make run` runs it, delivers from a relay process of its own beside the HTTP process: /readyz
shows the relay process's loops from its report, a frozen relay process makes the node unready until it
thaws, and a relay process that dies stops the service with a non-zero exit."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiopg
import pytest

from outbox.relay_report import STALE_AFTER_S
from tests.helpers import insert_interaction, scalar, wait_for
from tests.service_process import ServiceProcess, alive, children_of

RELAY_LOOPS = ("outbox-relay-0", "outbox-relay-1")


async def readiness(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/readyz") as resp:
        return resp.status, await resp.json()


@pytest.mark.slow
async def test_the_relay_process_delivers_and_readyz_reports_its_loops(
    database_url: str, db: aiopg.Pool, tmp_path: Path
) -> None:
    interaction_id = str(uuid.uuid4())
    await insert_interaction(db, interaction_id)
    async with (
        ServiceProcess({"DATABASE_URL": database_url}, tmp_path / "service.log") as service,
        aiohttp.ClientSession() as session,
    ):
        assert service.process is not None
        async with session.post(
            f"{service.url}/api/signal", json={"interaction_id": interaction_id, "name": "view"}
        ) as resp:
            assert resp.status == 202
        await wait_for(
            lambda: scalar(db, "select count(*) from analytics.eco_passive_signals"), lambda n: n == 1
        )
        status, ready = await wait_for(
            lambda: readiness(session, service.url),
            lambda answer: all(
                answer[1]["loops"].get(name, {}).get("last_success_age_s") for name in RELAY_LOOPS
            ),
        )
        assert status == 200, ready
        assert ready["relay_process"]["pid"] in children_of(service.process.pid), ready
        assert ready["relay_process"]["reported_s_ago"] < STALE_AFTER_S, ready
        assert "relay" not in ready, "not an intake-only node: its relay is the process beside it"


@pytest.mark.slow
async def test_a_frozen_relay_process_makes_the_node_unready_until_it_thaws(
    database_url: str, tmp_path: Path
) -> None:
    async with (
        ServiceProcess({"DATABASE_URL": database_url}, tmp_path / "service.log") as service,
        aiohttp.ClientSession() as session,
    ):
        _, ready = await readiness(session, service.url)
        relay_pid = ready["relay_process"]["pid"]
        os.kill(relay_pid, signal.SIGSTOP)
        try:
            status, frozen = await wait_for(
                lambda: readiness(session, service.url), lambda answer: answer[0] == 503, timeout_s=30
            )
            assert any("relay process silent" in problem for problem in frozen["problems"]), frozen
        finally:
            os.kill(relay_pid, signal.SIGCONT)
        await wait_for(lambda: readiness(session, service.url), lambda answer: answer[0] == 200, timeout_s=30)


@pytest.mark.slow
async def test_a_relay_process_that_dies_stops_the_service_non_zero(
    database_url: str, tmp_path: Path
) -> None:
    service = ServiceProcess({"DATABASE_URL": database_url}, tmp_path / "service.log")
    await service.start()
    try:
        assert service.process is not None
        async with aiohttp.ClientSession() as session:
            _, ready = await readiness(session, service.url)
        http_processes = children_of(service.process.pid) - {ready["relay_process"]["pid"]}
        os.kill(ready["relay_process"]["pid"], signal.SIGKILL)
        assert await service.wait(timeout_s=30) != 0
        assert not any(alive(pid) for pid in http_processes), service.log()[-2000:]
    finally:
        await service.stop()
