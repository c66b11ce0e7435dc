"""Admin endpoints and the `python -m service outbox` CLI: bearer token, stats, dead letters, requeue."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import replace

from aiohttp.test_utils import TestClient

from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, scalar, wait_for

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def admin_client(make_client) -> TestClient:
    return await make_client(admin_token=TOKEN, relay=replace(TEST_RELAY, max_attempts=2))


async def dead_signal(client: TestClient, db) -> tuple[str, str]:
    """A signal whose parent never appears, once the relay has dead-lettered it."""
    interaction_id = str(uuid.uuid4())
    resp = await client.post("/api/signal", json={"interaction_id": interaction_id, "name": "orphan"})
    assert resp.status == 202
    signal_id = (await resp.json())["id"]
    await wait_for(
        lambda: scalar(db, f"SELECT state FROM {OUTBOX_ROWS} WHERE key = %s", (signal_id,)),
        lambda state: state == "dead",
    )
    return interaction_id, signal_id


async def test_admin_is_off_without_a_token(client) -> None:
    resp = await client.get("/api/admin/outbox/stats")
    assert resp.status == 403
    assert (await resp.json())["error"] == "admin_disabled"


async def test_admin_requires_the_bearer_token(make_client) -> None:
    client = await admin_client(make_client)
    missing = await client.get("/api/admin/outbox/stats")
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await client.get("/api/admin/outbox/dead", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 403
    basic = await client.post(
        "/api/admin/outbox/requeue", headers={"Authorization": f"Basic {TOKEN}"}, json={}
    )
    assert basic.status == 401
    ok = await client.get("/api/admin/outbox/stats", headers=AUTH)
    assert ok.status == 200


async def test_dead_letters_are_listed_and_requeued_then_delivered(make_client, db) -> None:
    client = await admin_client(make_client)
    interaction_id, signal_id = await dead_signal(client, db)

    stats = await (await client.get("/api/admin/outbox/stats", headers=AUTH)).json()
    assert stats["dead"]["signal"]["rows"] == 1
    assert stats["dead_total"] == 1

    dead = await (await client.get("/api/admin/outbox/dead", headers=AUTH)).json()
    [item] = dead["items"]
    assert item["key"] == signal_id
    assert item["payload"]["interaction_id"] == interaction_id
    assert item["last_error"] == "parent_missing"
    assert item["attempts"] == 2

    bad = await client.post("/api/admin/outbox/requeue", headers=AUTH, json={"seqs": [], "all": False})
    assert bad.status == 422

    await fetch(db, "INSERT INTO analytics.eco_interactions (id) VALUES (%s) RETURNING id", (interaction_id,))
    resp = await client.post("/api/admin/outbox/requeue", headers=AUTH, json={"seqs": [item["seq"]]})
    assert resp.status == 200
    assert await resp.json() == {"requeued": [item["seq"]], "count": 1}

    # The relay marks the outbox row only after the target row has committed: wait on the mark itself.
    await wait_for(
        lambda: scalar(db, f"SELECT state FROM {OUTBOX_ROWS} WHERE key = %s", (signal_id,)),
        lambda state: state == "delivered",
    )
    rows = await fetch(
        db, "SELECT id::text FROM analytics.eco_passive_signals WHERE interaction_id = %s", (interaction_id,)
    )
    assert rows == [(signal_id,)]


async def test_dead_listing_pages_and_validates_its_query(make_client, db) -> None:
    client = await admin_client(make_client)
    await dead_signal(client, db)
    await dead_signal(client, db)
    first = await (await client.get("/api/admin/outbox/dead?limit=1", headers=AUTH)).json()
    assert len(first["items"]) == 1 and first["next_after_seq"] == first["items"][0]["seq"]
    second = await (
        await client.get(f"/api/admin/outbox/dead?limit=1&after_seq={first['next_after_seq']}", headers=AUTH)
    ).json()
    assert second["items"][0]["seq"] > first["items"][0]["seq"]
    bad = await client.get("/api/admin/outbox/dead?limit=zero", headers=AUTH)
    assert bad.status == 422


async def run_cli(database_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "outbox",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    return process.returncode or 0, stdout.decode()


async def test_cli_stats_dead_and_requeue(make_client, db, database_url) -> None:
    client = await admin_client(make_client)
    _, signal_id = await dead_signal(client, db)

    code, out = await run_cli(database_url, "stats")
    assert code == 0 and json.loads(out)["dead"]["signal"]["rows"] == 1

    code, out = await run_cli(database_url, "dead")
    [item] = json.loads(out)
    assert code == 0 and item["key"] == signal_id

    code, _ = await run_cli(database_url, "requeue")
    assert code == 2

    code, out = await run_cli(database_url, "requeue", "--all")
    assert code == 0 and json.loads(out) == {"requeued": [item["seq"]], "count": 1}


async def test_dead_letters_are_kept_until_purged_explicitly(make_client, db, database_url) -> None:
    client = await admin_client(make_client)
    _, signal_id = await dead_signal(client, db)
    keep = await client.post("/api/admin/outbox/purge-dead", headers=AUTH, json={"older_than_s": 3600})
    assert await keep.json() == {"purged": 0}
    assert await scalar(db, f"SELECT state FROM {OUTBOX_ROWS} WHERE key = %s", (signal_id,)) == "dead"
    assert (await client.post("/api/admin/outbox/purge-dead", headers=AUTH, json={})).status == 422

    code, out = await run_cli(database_url, "purge-dead", "--older-than-s", "0")
    assert code == 0 and json.loads(out) == {"purged": 1}
    assert await scalar(db, f"SELECT count(*) FROM {OUTBOX_ROWS} WHERE key = %s", (signal_id,)) == 0
