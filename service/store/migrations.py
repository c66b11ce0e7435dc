"""Numbered SQL files in sql/, applied once each, in order, under an advisory lock.

A file is named NNN_<database>_<what>.sql, where <database> is `target` (the analytics tables) or `outbox`;
when both are one server, it gets both sets. Every file is written to be idempotent as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import aiopg

from outbox.sqlutil import transaction
from service.config import PROJECT_DIR
from service.store.database import Databases

MIGRATIONS_DIR = PROJECT_DIR / "sql"
_NAME = re.compile(r"^(?P<number>\d+)_(?P<database>target|outbox)_[\w-]+\.sql$")

TARGET = "target"
OUTBOX = "outbox"

CREATE_LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS public.eco_schema_migrations (
    version text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# Serialises migrators in any number of processes; released at the end of the transaction.
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('eco_outbox.migrations'))"
LEDGER_EXISTS_SQL = "SELECT to_regclass('public.eco_schema_migrations') IS NOT NULL"
APPLIED_SQL = "SELECT version FROM public.eco_schema_migrations"
RECORD_SQL = "INSERT INTO public.eco_schema_migrations (version) VALUES (%(version)s) ON CONFLICT DO NOTHING"


@dataclass(frozen=True)
class Migration:
    version: str
    database: str
    path: Path


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name not of the form NNN_(target|outbox)_name.sql: {path.name}")
        migrations.append(Migration(path.stem, match["database"], path))
    return migrations


def _for(databases: frozenset[str]) -> list[Migration]:
    return [m for m in available() if m.database in databases]


async def pending(pool: aiopg.Pool, databases: frozenset[str]) -> list[str]:
    """Versions not yet applied to the database behind `pool`."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(LEDGER_EXISTS_SQL)
        (exists,) = await cur.fetchone()
        applied: set[str] = set()
        if exists:
            await cur.execute(APPLIED_SQL)
            applied = {row[0] for row in await cur.fetchall()}
    return [m.version for m in _for(databases) if m.version not in applied]


async def migrate(pool: aiopg.Pool, databases: frozenset[str]) -> list[str]:
    """Apply what is missing, all in one transaction; returns the versions applied now."""
    done: list[str] = []
    async with pool.acquire() as conn, conn.cursor() as cur:
        async with transaction(cur):
            await cur.execute(LOCK_SQL)
            await cur.execute(CREATE_LEDGER_SQL)
            await cur.execute(APPLIED_SQL)
            applied = {row[0] for row in await cur.fetchall()}
            for migration in _for(databases):
                if migration.version in applied:
                    continue
                await cur.execute(migration.path.read_text())
                await cur.execute(RECORD_SQL, {"version": migration.version})
                done.append(migration.version)
    return done


def plan(outbox_dsn: str, target_dsn: str) -> list[tuple[str, frozenset[str]]]:
    """Which sets of migrations go to which database: both to one server when the DSNs are the same."""
    if outbox_dsn == target_dsn:
        return [(OUTBOX, frozenset({TARGET, OUTBOX}))]
    return [(TARGET, frozenset({TARGET})), (OUTBOX, frozenset({OUTBOX}))]


def roles(databases: Databases) -> list[tuple[str, aiopg.Pool, frozenset[str]]]:
    """(role, pool, migration sets) for each distinct database."""
    pools = {OUTBOX: databases.outbox, TARGET: databases.target}
    return [(role, pools[role], sets) for role, sets in plan(databases.outbox_dsn, databases.target_dsn)]


async def migrate_databases(databases: Databases) -> dict[str, list[str]]:
    """Bring every database up to date; returns the versions applied now, by role."""
    return {role: await migrate(pool, sets) for role, pool, sets in roles(databases)}
