"""The ECO target's child tables: a fresh database gets them, with the ECO columns exactly, and a real ECO
database, which has them already (from its first DDL, with its own function), is migrated unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg2.extensions import make_dsn

from tests.pg import admin, drop_database, migrate

# (table, column, type as information_schema names it, nullable) from ECO_CONTRACT.md.
ECO_COLUMNS = {
    "eco_feedback": [
        ("id", "uuid", "NO"),
        ("interaction_id", "uuid", "YES"),
        ("user_id", "uuid", "YES"),
        ("session_id", "text", "YES"),
        ("vote", "USER-DEFINED", "NO"),
        ("reason", "ARRAY", "YES"),
        ("source", "text", "YES"),
        ("meta", "jsonb", "YES"),
        ("created_at", "timestamp with time zone", "NO"),
        ("message_id", "text", "YES"),
        ("arm", "text", "YES"),
        ("pillar", "text", "YES"),
        ("prompt_hash", "text", "YES"),
        ("timestamp", "timestamp with time zone", "YES"),
    ],
    "bandit_rewards": [
        ("id", "uuid", "NO"),
        ("response_id", "text", "NO"),
        ("interaction_id", "uuid", "YES"),
        ("pilar", "text", "NO"),
        ("arm", "text", "NO"),
        ("recompensa", "numeric", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
    ],
    "eco_module_usages": [
        ("id", "uuid", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("interaction_id", "uuid", "NO"),
        ("module_key", "text", "NO"),
        ("tokens", "integer", "YES"),
        ("position", "integer", "YES"),
    ],
    "eco_bandit_arms": [
        ("arm_key", "text", "NO"),
        ("pulls", "bigint", "NO"),
        ("alpha", "double precision", "NO"),
        ("beta", "double precision", "NO"),
        ("reward_sum", "double precision", "NO"),
        ("reward_sq_sum", "double precision", "NO"),
        ("last_update", "timestamp with time zone", "NO"),
    ],
}

# A real ECO database as its first DDL made it: eco_feedback without the columns added later, and an
# update_bandit_arm of its own (a marker body, so the test sees it is kept).
ECO_FIRST_DDL = """
create schema analytics;
create table analytics.eco_interactions (id uuid primary key default gen_random_uuid(), user_id uuid,
  session_id text, message_id text, prompt_hash text, module_combo text[], tokens_in int, tokens_out int,
  latency_ms int, created_at timestamptz not null default now());
create type analytics.eco_feedback_vote as enum ('up', 'down');
create table analytics.eco_feedback (id uuid primary key default gen_random_uuid(),
  interaction_id uuid references analytics.eco_interactions (id) on delete cascade, user_id uuid,
  session_id text, vote analytics.eco_feedback_vote not null, reason text[], source text, meta jsonb,
  created_at timestamptz not null default now());
create table analytics.eco_bandit_arms (arm_key text primary key, pulls bigint not null default 0,
  alpha float8 not null default 1, beta float8 not null default 1, reward_sum float8 not null default 0,
  reward_sq_sum float8 not null default 0, last_update timestamptz not null default now());
create function analytics.update_bandit_arm(p_arm_key text, p_reward numeric) returns void
  language sql as $$ select 1 $$;
insert into analytics.eco_bandit_arms (arm_key, pulls, alpha) values ('kept', 7, 5);
"""


@pytest.fixture
def empty_db(server_dsn: str) -> Iterator[str]:
    name = f"eco_target_{uuid.uuid4().hex[:12]}"
    admin(server_dsn, f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    yield dsn
    drop_database(dsn)


def columns(dsn: str, table: str) -> list[tuple[object, ...]]:
    return admin(
        dsn,
        "select column_name, data_type, is_nullable from information_schema.columns"
        f" where table_schema = 'analytics' and table_name = '{table}' order by ordinal_position",
    )


@pytest.mark.parametrize("existing", [False, True], ids=["fresh-database", "real-eco-database"])
async def test_the_eco_child_tables_are_there_with_their_columns(empty_db: str, existing: bool) -> None:
    if existing:
        admin(empty_db, ECO_FIRST_DDL)
    await migrate(empty_db)
    await migrate(empty_db)  # idempotent: a second start applies nothing and fails on nothing
    for table, expected in ECO_COLUMNS.items():
        assert columns(empty_db, table) == [tuple(column) for column in expected], table
    [(labels,)] = admin(empty_db, "select enum_range(null::analytics.eco_feedback_vote)::text")
    assert labels == "{up,down}"
    assert admin(
        empty_db, "select indexdef from pg_indexes where indexname = 'bandit_rewards_response_arm_uidx'"
    )
    [(body,)] = admin(empty_db, "select prosrc from pg_proc where proname = 'update_bandit_arm'")
    if existing:
        assert body.strip() == "select 1"
        assert admin(empty_db, "select pulls, alpha from analytics.eco_bandit_arms") == [(7, 5.0)]
    else:
        # The function the ECO target has, for its other callers: creates the arm, then counts the reward.
        admin(
            empty_db,
            "select analytics.update_bandit_arm('a', 1)",
            "select analytics.update_bandit_arm('a', -1)",
        )
        assert admin(
            empty_db, "select pulls, alpha, beta, reward_sum, reward_sq_sum from analytics.eco_bandit_arms"
        ) == [(2, 2.0, 2.0, 0.0, 2.0)]
