"""A rolling upgrade: the previous release (its code from this repository's git history) serves under load,
then this release starts on the same database and migrates it. The previous release answers no 5xx and
loses nothing, during the migration and after it, beside this one; the loss checker agrees."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import aiohttp
import aiopg
import pytest
from psycopg2.extensions import make_dsn

from service.config import PROJECT_DIR
from tests.helpers import read_sse, scalar, wait_for
from tests.loss_checker import LossChecker
from tests.pg import admin
from tests.service_process import ServiceProcess

# The release before this one; bump it when a release ships.
PREVIOUS_RELEASE = "9b02dca"
SIGNALS_PER_ASK = 5
LOADERS = 2
# Requests (asks and signal posts) the old release answers once the new one is ready and has migrated.
REQUESTS_AFTER = 40


def extract_release(commit: str, directory: Path) -> Path:
    """The release's tree from git history (CI runs in a clone of main, which holds it)."""
    found = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    assert found.returncode == 0, f"commit {commit} is not in this clone's history (a shallow clone?)"
    directory.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "archive", "--format=tar", commit], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return directory


def env_for(outbox_dsn: str, target_dsn: str, tree: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": outbox_dsn,
        "TARGET_DATABASE_URL": "" if target_dsn == outbox_dsn else target_dsn,
        "PYTHONPATH": str(tree),
        "ECO_RATE_LIMIT_PER_S": "0",
        "ECO_OFFLINE_CHUNK_DELAY_MS": "0",
    }


class Load:
    """Loaders that each ask, then post the interaction's signals, until stopped; every answer is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.checker = LossChecker()
        self.statuses: list[int | None] = []
        self.asks: list[str] = []
        self.rounds = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, session: aiohttp.ClientSession) -> None:
        self._tasks = [asyncio.create_task(self._run(session)) for _ in range(LOADERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _run(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            try:
                async with session.post(
                    f"{self.url}/api/ask-eco",
                    json={"message": "Olá"},
                    headers={"Accept": "text/event-stream"},
                ) as resp:
                    self.statuses.append(resp.status)
                    if resp.status != 200:
                        continue
                    interaction = resp.headers["X-Eco-Interaction-Id"]
                    events = await read_sse(resp)
            except (aiohttp.ClientError, ConnectionError):
                self.statuses.append(None)
                continue
            assert events[-1].event == "done", events[-1]
            self.asks.append(interaction)
            bodies = [self.checker.body(interaction, i=i) for i in range(SIGNALS_PER_ASK)]
            self.statuses.append(await self.checker.post(session, self.url, bodies))
            self.rounds += 1


@pytest.mark.slow
@pytest.mark.parametrize("split", [False, True], ids=["one database", "outbox and target apart"])
async def test_the_previous_release_loses_nothing_while_this_one_migrates_beside_it(
    server_dsn: str, tmp_path: Path, split: bool
) -> None:
    old_tree = extract_release(PREVIOUS_RELEASE, tmp_path / "previous")
    names = [f"eco_upgrade_{uuid.uuid4().hex[:10]}" for _ in range(2 if split else 1)]
    for name in names:
        admin(server_dsn, f"CREATE DATABASE {name}")
    outbox_dsn, target_dsn = (make_dsn(server_dsn, dbname=name) for name in (names[0], names[-1]))
    outbox = await aiopg.create_pool(outbox_dsn, minsize=0, maxsize=4, enable_hstore=False)
    target = await aiopg.create_pool(target_dsn, minsize=0, maxsize=4, enable_hstore=False)
    old_env, new_env = (env_for(outbox_dsn, target_dsn, tree) for tree in (old_tree, PROJECT_DIR))
    old = ServiceProcess(old_env, tmp_path / "old.log", name="previous", cwd=old_tree)
    new = ServiceProcess(new_env, tmp_path / "new.log", name="this release")
    try:
        # The previous release creates the schema as it would have in production, then serves under load.
        await old.start()
        on_old, on_new = Load(old.url), Load(new.url)
        async with aiohttp.ClientSession() as session:
            on_old.start(session)
            try:
                await wait_for(
                    lambda: asyncio.sleep(0, on_old.rounds), lambda rounds: rounds >= 3, timeout_s=30
                )
                await new.start()
                on_new.start(session)
                after = len(on_old.statuses)
                await wait_for(
                    lambda: asyncio.sleep(0, len(on_old.statuses)),
                    lambda answered: answered >= after + REQUESTS_AFTER,
                    timeout_s=120,
                )
            finally:
                await asyncio.gather(on_old.stop(), on_new.stop())

        for load in (on_old, on_new):
            assert load.statuses and set(load.statuses) <= {200, 202}, sorted(map(str, set(load.statuses)))
            await load.checker.wait_settled(outbox)
            report = await load.checker.verify(outbox, target)
            assert report.delivered == report.acknowledged > 0 and report.dead == 0
            assert await scalar(
                target,
                "select count(*) from analytics.eco_interactions where id = any(%s::uuid[])"
                " and tokens_out is not null",
                (load.asks,),
            ) == len(load.asks)
        assert "Traceback" not in old.log() + new.log()
    finally:
        await new.terminate()
        await old.terminate()
        for pool in (outbox, target):
            pool.close()
            await pool.wait_closed()
        for name in names:
            admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
