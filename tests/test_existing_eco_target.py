"""An existing ECO target: the analytics tables as the ECO backend's schema files create them, with its data
(a message_id repeated, RLS on, rows its backend wrote). The service starts on it and serves; it says in one
line what it added and in one what it could not add and why (also in /readyz), never with a traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import aiopg
from psycopg2.extensions import make_dsn

from tests.helpers import read_sse, scalar, wait_for
from tests.pg import admin
from tests.service_process import ServiceProcess

# The columns and constraints of ECO's analytics tables as its repository's schema describes them (no unique
# index on message_id, no meta on interactions, nullable signal columns), RLS on as its hardening sets it.
ECO_TARGET_DDL = """
create schema analytics;
create table analytics.eco_interactions (
    id uuid primary key default gen_random_uuid(), user_id uuid, session_id text, message_id text,
    prompt_hash text, module_combo text[], tokens_in int, tokens_out int, latency_ms int,
    created_at timestamptz not null default now());
create table analytics.eco_passive_signals (
    id uuid primary key default gen_random_uuid(),
    interaction_id uuid references analytics.eco_interactions (id) on delete cascade,
    user_id uuid, session_id text, signal text, value float8, meta jsonb,
    created_at timestamptz not null default now());
create index eco_passive_signals_interaction_idx on analytics.eco_passive_signals (interaction_id);
alter table analytics.eco_interactions enable row level security;
alter table analytics.eco_passive_signals enable row level security;
"""
OLD_BACKEND_ROWS = """
insert into analytics.eco_interactions (id, message_id, session_id, tokens_in)
values ('00000000-0000-0000-0000-00000000000a', 'm-1', 's', 3),
       ('00000000-0000-0000-0000-00000000000b', 'm-1', 's', 4);
insert into analytics.eco_passive_signals (interaction_id, signal, value)
values ('00000000-0000-0000-0000-00000000000a', 'view', 1.0);
"""


async def test_the_service_starts_and_serves_on_an_existing_eco_target(
    server_dsn: str, tmp_path: Path
) -> None:
    name = f"eco_existing_{uuid.uuid4().hex[:10]}"
    admin(server_dsn, f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    try:
        admin(dsn, ECO_TARGET_DDL, OLD_BACKEND_ROWS)
        async with ServiceProcess({"DATABASE_URL": dsn}, tmp_path / "service.log") as service:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{service.url}/readyz") as resp:
                    ready = await resp.json()
                assert resp.status == 200, ready
                reason = ready["not_added"]["012_target_interactions_message_id_key"]
                assert reason.startswith("23505: could not create unique index")
                assert "a repeated message_id is stored as a second interaction" in reason
                async with session.post(
                    f"{service.url}/api/ask-eco",
                    json={"message": "Olá"},
                    headers={"Accept": "text/event-stream"},
                ) as resp:
                    assert resp.status == 200
                    await read_sse(resp)
                    interaction = resp.headers["X-Eco-Interaction-Id"]
                async with session.post(
                    f"{service.url}/api/signal", json={"interaction_id": interaction, "name": "view"}
                ) as resp:
                    assert resp.status == 202
                    signal = (await resp.json())["id"]
            pool = await aiopg.create_pool(dsn, minsize=0, maxsize=2)
            try:
                await wait_for(
                    lambda: scalar(
                        pool, "select count(*) from analytics.eco_passive_signals where id = %s", (signal,)
                    ),
                    lambda count: count == 1,
                )
                assert await scalar(pool, "select count(*) from analytics.eco_interactions") == 3
                assert await scalar(pool, "select count(*) from pg_index where not indisvalid") == 0
            finally:
                pool.close()
                await pool.wait_closed()
        log = service.log()
        assert "Traceback" not in log
        added = [line for line in log.splitlines() if "migrations added:" in line]
        not_added = [line for line in log.splitlines() if "migrations not added:" in line]
        assert len(added) == 1 and "001_target_analytics" in added[0] and "013_target" in added[0]
        assert len(not_added) == 1 and "012_target_interactions_message_id_key (23505" in not_added[0]
    finally:
        admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
