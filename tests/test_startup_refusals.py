"""Configuration that cannot work is refused at start in one clear line, and an intake-only node says what
it relies on; a start-up that cannot migrate is one line too, never a traceback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from dataclasses import replace

import aiopg
import pytest

from service.config import PROJECT_DIR, Config, ConfigError
from tests.conftest import TEST_RELAY
from tests.helpers import fetch, scalar
from tests.service_process import free_port


def run_service(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR), **env},
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("token", ["s3cret\n", " s3cret", "s3cret\t", "\n"])
def test_an_admin_token_that_differs_from_itself_stripped_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="ECO_ADMIN_TOKEN has leading or trailing whitespace"):
        Config.from_env({"ECO_ADMIN_TOKEN": token})


def test_a_clean_admin_token_is_kept() -> None:
    assert Config.from_env({"ECO_ADMIN_TOKEN": "s3cret"}).admin_token == "s3cret"


def test_serve_refuses_it_in_one_line(database_url: str) -> None:
    result = run_service({"DATABASE_URL": database_url, "ECO_ADMIN_TOKEN": "s3cret\n"}, "serve")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("configuration refused: ECO_ADMIN_TOKEN has leading or trailing whitespace")


async def test_an_intake_only_node_is_ready_and_says_it_relies_on_a_relay_elsewhere(make_client, db) -> None:
    client = await make_client(relay=replace(TEST_RELAY, loops=0))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert "relies on a relay running elsewhere" in body["relay"]
    scrape = await (await client.get("/metrics")).text()
    assert "eco_outbox_relay_running 1.0" in scrape
    accepted = await client.post("/api/signal", json={"interaction_id": str(uuid.uuid4()), "name": "view"})
    assert accepted.status == 202
    key = (await accepted.json())["id"]
    assert await scalar(db, "select state from eco_outbox.events where key = %s", (key,)) == "pending"


async def test_a_migration_that_cannot_finish_ends_the_start_in_one_line(database_url: str, db) -> None:
    """001 waits behind a long transaction on its table: the migrator gives up at its own deadline (not the
    pool's client timeout) and says so, without a traceback."""
    await fetch(db, "delete from public.eco_schema_migrations where version = '001_target_analytics'")
    holder = await aiopg.connect(database_url)
    cur = await holder.cursor()
    await cur.execute("BEGIN; LOCK TABLE analytics.eco_interactions IN ROW SHARE MODE")
    try:
        env = {
            "DATABASE_URL": database_url,
            "ECO_MIGRATION_TIMEOUT_S": "1",
            "ECO_MIGRATION_LOCK_TIMEOUT_MS": "100",
            "ECO_MIGRATION_RETRY_PAUSE_S": "0.1",
        }
        result = await asyncio.to_thread(run_service, env, "serve")
    finally:
        await cur.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert "001_target_analytics not applied (55P03" in line


def test_an_unreachable_database_at_start_is_one_line() -> None:
    # A closed port on loopback: the connection is refused at once.
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    result = run_service({"DATABASE_URL": dsn}, "serve")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert "the outbox database could not be reached" in line
