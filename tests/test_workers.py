"""ECO_WORKERS=2: `python -m service serve` runs two HTTP processes on one port and the relay process beside
them, and SIGTERM stops them all cleanly; /metrics sums both workers, and the rate limit keys on the client
behind a trusted proxy."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import aiohttp
import aiopg
import pytest

from tests.helpers import insert_interaction, scalar, wait_for
from tests.service_process import ServiceProcess, alive, children_of
from tests.test_operations import sample

STOP_TIMEOUT_S = 30.0
SIGNALS = 40
# Two HTTP processes and the relay process; only the relay process LISTENs, for its loops to wake.
PROCESSES = 3
LISTENERS = 1


@pytest.mark.slow
async def test_two_workers_serve_relay_and_stop_on_sigterm(
    database_url: str, db: aiopg.Pool, tmp_path: Path
) -> None:
    service = ServiceProcess(
        {"DATABASE_URL": database_url, "ECO_WORKERS": "2", "ECO_RATE_LIMIT_PER_S": "0"},
        tmp_path / "service.log",
    )
    await service.start()
    try:
        assert service.process is not None
        workers = await wait_for(
            lambda: _children(service.process.pid), lambda pids: len(pids) == PROCESSES, timeout_s=30
        )
        await wait_for(
            lambda: scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%%'",
            ),
            lambda count: count == LISTENERS,
            timeout_s=30,
        )
        interaction_id = str(uuid.uuid4())
        await insert_interaction(db, interaction_id)
        async with aiohttp.ClientSession() as session:
            for _ in range(SIGNALS):
                # A new connection each time, so that the kernel spreads them over both workers.
                async with session.post(
                    f"{service.url}/api/signal",
                    json={"interaction_id": interaction_id, "name": "view"},
                    headers={"Connection": "close"},
                ) as response:
                    assert response.status == 202
        await wait_for(
            lambda: scalar(db, "SELECT count(*) FROM analytics.eco_passive_signals"),
            lambda count: count == SIGNALS,
            timeout_s=30,
        )
        service.send(signal.SIGTERM)
        assert await service.wait(STOP_TIMEOUT_S) == 0
        assert not children_of(service.process.pid) & workers
        assert not any(alive(pid) for pid in workers), service.log()[-2000:]
    finally:
        await service.stop()


async def _children(pid: int) -> set[int]:
    return children_of(pid)


async def _posts(session: aiohttp.ClientSession, url: str, forwarded_for: list[str]) -> list[int]:
    statuses = []
    for client in forwarded_for:
        async with session.post(
            f"{url}/api/signal",
            json={"interaction_id": str(uuid.uuid4()), "name": "view"},
            headers={"X-Forwarded-For": client},
        ) as response:
            statuses.append(response.status)
    return statuses


@pytest.mark.slow
async def test_two_workers_sum_their_metrics_and_key_clients_behind_a_trusted_proxy(
    database_url: str, db: aiopg.Pool, tmp_path: Path
) -> None:
    service = ServiceProcess(
        {
            "DATABASE_URL": database_url,
            "ECO_WORKERS": "2",
            "ECO_TRUSTED_PROXIES": "127.0.0.1",
            "ECO_RATE_LIMIT_PER_S": "0.001",
            "ECO_RATE_LIMIT_BURST": "2",
        },
        tmp_path / "service.log",
    )
    await service.start()
    try:
        assert service.process is not None
        await wait_for(
            lambda: _children(service.process.pid), lambda pids: len(pids) == PROCESSES, timeout_s=30
        )
        await wait_for(
            lambda: scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%%'",
            ),
            lambda count: count == LISTENERS,
            timeout_s=30,
        )
        # A new connection for each request, so that the kernel spreads them over both workers; each from
        # its own client behind the proxy, so that none is rate-limited.
        async with aiohttp.ClientSession(headers={"Connection": "close"}) as session:
            clients = [f"198.51.100.{i}" for i in range(SIGNALS)]
            assert await _posts(session, service.url, clients) == [202] * SIGNALS
            for _ in range(10):
                async with session.get(f"{service.url}/metrics") as response:
                    text = await response.text()
                counted = sample(
                    text, "eco_http_request_seconds_count", method="POST", route="/api/signal", status="202"
                )
                assert counted == SIGNALS, "every scrape sums both workers"

        # One keep-alive connection stays on one worker: its limit keys on the forwarded client.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            spoofed = "203.0.113.99, 203.0.113.9"
            assert await _posts(session, service.url, ["203.0.113.9", spoofed, "203.0.113.9"]) == [
                202,
                202,
                429,
            ]
            assert await _posts(session, service.url, ["203.0.113.10"]) == [202]
    finally:
        await service.stop()
