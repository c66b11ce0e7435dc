"""Numbered SQL files in sql/, applied once each, in order, by one migrator at a time, beside a running
release.

A file is named NNN_<database>_<what>.sql, where <database> is `target` (the analytics tables) or `outbox`;
when both are one server, it gets both sets. Every file is idempotent (`if not exists`), and expand-only: it
never drops or renames what the release before it reads or writes (docs/deploys.md has the policy).

How a file runs, said by an optional first line `-- migrate: <flag>[, <flag>]: <why>`:
- no flag: the whole file in one transaction;
- `concurrently`: the file is one `create [unique] index concurrently if not exists <name> on <schema>.<table>
  ...` statement, run outside a transaction, so that the build does not block the table's writers; an
  invalid index a failed build left behind is dropped before the next try;
- `optional`: the service works without what the file adds (the text after the colon says what is lost):
  a failure (a lock wait, once its retries ran out at the deadline) is reported (one log line, /readyz),
  not fatal, and tried again at the next start. Such a file is not recorded until it succeeds.

Every migrator takes a session advisory lock first (N processes, one migrator; the others wait, then find
nothing to do), on its own connection with its own deadline (never the pool's client timeout). Every
statement runs under `lock_timeout`: DDL waiting for a lock queues every later statement on the table
behind it, so it gives up quickly, and the file is tried again after a pause, until the deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiopg
import psycopg2
from loguru import logger

from outbox.errors import CONNECTION_ERRORS, describe, sqlstate
from outbox.sqlutil import transaction
from service.config import PROJECT_DIR, MigrationSettings
from service.store.database import Databases

MIGRATIONS_DIR = PROJECT_DIR / "sql"
_NAME = re.compile(r"^(?P<number>\d+)_(?P<database>target|outbox)_[\w-]+\.sql$")
_FLAGS = re.compile(r"^--\s*migrate:\s*(?P<flags>[\w ,]+?)\s*(?::\s*(?P<why>.*))?$")
_CONCURRENT_INDEX = re.compile(
    r"^\s*create\s+(?:unique\s+)?index\s+concurrently\s+if\s+not\s+exists\s+(?P<name>\w+)\s+on\s+"
    r"(?:only\s+)?(?P<schema>\w+)\.\w+\b[^;]*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
CONCURRENTLY = "concurrently"
OPTIONAL = "optional"
KNOWN_FLAGS = frozenset({CONCURRENTLY, OPTIONAL})

TARGET = "target"
OUTBOX = "outbox"

# A lock wait given up (55P03), a deadlock (40P01): someone else held the table; try again after a pause.
RETRIED_SQLSTATES = frozenset({"55P03", "40P01"})

CREATE_LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS public.eco_schema_migrations (
    version text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
# Held by the migrator's session, not a transaction: `concurrently` files run outside one.
_LOCK_KEY = "hashtext('eco_outbox.migrations')"
TRY_LOCK_SQL = f"SELECT pg_try_advisory_lock({_LOCK_KEY})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock({_LOCK_KEY})"
LEDGER_EXISTS_SQL = "SELECT to_regclass('public.eco_schema_migrations') IS NOT NULL"
APPLIED_SQL = "SELECT version FROM public.eco_schema_migrations"
RECORD_SQL = "INSERT INTO public.eco_schema_migrations (version) VALUES (%(version)s) ON CONFLICT DO NOTHING"
INVALID_INDEX_SQL = """
SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND NOT i.indisvalid
"""


class MigrationError(RuntimeError):
    """A required migration could not be applied before the deadline; the message says which and why."""


@dataclass(frozen=True)
class Migration:
    version: str
    database: str
    path: Path
    flags: frozenset[str] = frozenset()
    # For an optional file: what the service lacks without it.
    why: str = ""

    @property
    def optional(self) -> bool:
        return OPTIONAL in self.flags

    @property
    def concurrently(self) -> bool:
        return CONCURRENTLY in self.flags

    def sql(self) -> str:
        return self.path.read_text()

    def index(self) -> tuple[str, str]:
        """A `concurrently` file's index: (schema, name)."""
        match = _CONCURRENT_INDEX.match(_without_comments(self.sql()))
        assert match is not None, self.path.name
        return match["schema"], match["name"]


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def _parse(path: Path) -> Migration:
    match = _NAME.match(path.name)
    if match is None:
        raise ValueError(f"migration file name not of the form NNN_(target|outbox)_name.sql: {path.name}")
    first = path.read_text().splitlines()[:1]
    flags: frozenset[str] = frozenset()
    why = ""
    if first and (header := _FLAGS.match(first[0].strip())):
        flags = frozenset(flag.strip() for flag in header["flags"].split(",") if flag.strip())
        why = header["why"] or ""
        if unknown := flags - KNOWN_FLAGS:
            raise ValueError(f"{path.name}: unknown migrate flags {sorted(unknown)}")
    migration = Migration(path.stem, match["database"], path, flags, why)
    if migration.concurrently and _CONCURRENT_INDEX.match(_without_comments(migration.sql())) is None:
        raise ValueError(
            f"{path.name}: a `concurrently` file holds one `create [unique] index concurrently if not exists"
            " <name> on <schema>.<table> ...` statement"
        )
    return migration


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [_parse(path) for path in sorted(directory.glob("*.sql"))]


def _for(databases: frozenset[str], directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [m for m in available(directory) if m.database in databases]


@dataclass
class Outcome:
    """What one migrator did to one database: versions applied now, and optional ones it could not apply,
    with why."""

    applied: list[str] = field(default_factory=list)
    not_added: dict[str, str] = field(default_factory=dict)


async def applied_versions(pool: aiopg.Pool) -> set[str]:
    """Read-only: the ledger's versions (none when it does not exist yet)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(LEDGER_EXISTS_SQL)
        (exists,) = await cur.fetchone()
        if not exists:
            return set()
        await cur.execute(APPLIED_SQL)
        return {row[0] for row in await cur.fetchall()}


async def pending(pool: aiopg.Pool, databases: frozenset[str]) -> tuple[list[str], list[Migration]]:
    """Read-only: (required versions not applied, optional migrations not applied)."""
    applied = await applied_versions(pool)
    missing = [m for m in _for(databases) if m.version not in applied]
    return [m.version for m in missing if not m.optional], [m for m in missing if m.optional]


class _Migrator:
    def __init__(self, cur: aiopg.Cursor, settings: MigrationSettings, deadline: float) -> None:
        self._cur = cur
        self._settings = settings
        self._deadline = deadline

    def _left_s(self) -> float:
        return self._deadline - time.monotonic()

    async def lock(self) -> None:
        """Wait for the advisory lock without holding a statement open: the wait is bounded by the deadline,
        and a migrator that dies while holding it releases it with its session."""
        while True:
            await self._cur.execute(TRY_LOCK_SQL)
            if (await self._cur.fetchone())[0]:
                return
            if self._left_s() <= 0:
                raise MigrationError("another migrator held the migration lock until the deadline")
            await asyncio.sleep(min(self._settings.retry_pause_s, max(self._left_s(), 0)))

    async def apply(self, migration: Migration) -> None:
        """Apply one file, trying again after a lock wait given up, until the deadline (said once a file)."""
        waited = False
        while True:
            try:
                await self._apply_once(migration)
                return
            except psycopg2.Error as exc:
                if sqlstate(exc) not in RETRIED_SQLSTATES or self._left_s() <= self._settings.retry_pause_s:
                    raise
                if not waited:
                    logger.bind(code=sqlstate(exc)).info(
                        "migration {} waits for locks others hold; trying again until its deadline",
                        migration.version,
                    )
                waited = True
            await asyncio.sleep(self._settings.retry_pause_s)

    async def _apply_once(self, migration: Migration) -> None:
        cur = self._cur
        if migration.concurrently:
            await self.drop_invalid_index(migration)
            await cur.execute(migration.sql())
            await cur.execute(RECORD_SQL, {"version": migration.version})
            return
        async with transaction(cur):
            await cur.execute(migration.sql())
            await cur.execute(RECORD_SQL, {"version": migration.version})

    async def drop_invalid_index(self, migration: Migration) -> None:
        """A failed concurrent build leaves an invalid index that `if not exists` would take for done, and
        that a unique one still enforces on new rows."""
        schema, name = migration.index()
        await self._cur.execute(INVALID_INDEX_SQL, {"schema": schema, "name": name})
        if await self._cur.fetchone():
            await self._cur.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}")


async def migrate(
    dsn: str, databases: frozenset[str], settings: MigrationSettings, directory: Path = MIGRATIONS_DIR
) -> Outcome:
    """Apply what is missing to the database at `dsn`, one file at a time; raises MigrationError when a
    required file cannot be applied before `settings.timeout_s`."""
    deadline = time.monotonic() + settings.timeout_s
    outcome = Outcome()
    # Its own connection: the pool's client timeout (seconds) must not cut a lock wait or an index build.
    async with aiopg.connect(dsn, timeout=settings.timeout_s, enable_hstore=False) as conn:
        async with conn.cursor() as cur:
            await cur.execute(f"SET lock_timeout = {int(settings.lock_timeout_ms)}")
            migrator = _Migrator(cur, settings, deadline)
            await migrator.lock()
            try:
                await cur.execute(CREATE_LEDGER_SQL)
                await cur.execute(APPLIED_SQL)
                applied = {row[0] for row in await cur.fetchall()}
                for migration in _for(databases, directory):
                    if migration.version in applied:
                        continue
                    try:
                        await migrator.apply(migration)
                    except psycopg2.Error as exc:
                        reason = describe(exc)
                        if not migration.optional:
                            raise MigrationError(f"{migration.version} not applied ({reason})") from exc
                        if migration.concurrently:
                            await migrator.drop_invalid_index(migration)
                        outcome.not_added[migration.version] = f"{reason}; without it, {migration.why}"
                        continue
                    outcome.applied.append(migration.version)
            finally:
                if not cur.closed:
                    await cur.execute(UNLOCK_SQL)
    return outcome


def plan(outbox_dsn: str, target_dsn: str) -> list[tuple[str, frozenset[str]]]:
    """Which sets of migrations go to which database: both to one server when the DSNs are the same."""
    if outbox_dsn == target_dsn:
        return [(OUTBOX, frozenset({TARGET, OUTBOX}))]
    return [(TARGET, frozenset({TARGET})), (OUTBOX, frozenset({OUTBOX}))]


def roles(databases: Databases) -> list[tuple[str, aiopg.Pool, frozenset[str]]]:
    """(role, pool, migration sets) for each distinct database."""
    pools = {OUTBOX: databases.outbox, TARGET: databases.target}
    return [(role, pools[role], sets) for role, sets in plan(databases.outbox_dsn, databases.target_dsn)]


async def migrate_dsns(outbox_dsn: str, target_dsn: str, settings: MigrationSettings) -> dict[str, Outcome]:
    """Bring every database up to date; what was applied and what could not be, by role. A database that
    cannot be reached is a MigrationError naming it."""
    dsns = {OUTBOX: outbox_dsn, TARGET: target_dsn}
    outcomes: dict[str, Outcome] = {}
    for role, sets in plan(outbox_dsn, target_dsn):
        try:
            outcomes[role] = await migrate(dsns[role], sets, settings)
        except CONNECTION_ERRORS as exc:
            raise MigrationError(
                f"the {role} database could not be reached or did not answer in time: {describe(exc)}"
            ) from exc
    return outcomes


def log_outcomes(outcomes: dict[str, Outcome]) -> None:
    """One line for what was added, one for what could not be and why."""
    added = [f"{role}: {', '.join(o.applied)}" for role, o in outcomes.items() if o.applied]
    not_added = [f"{version} ({why})" for o in outcomes.values() for version, why in o.not_added.items()]
    if added:
        logger.info("migrations added: {}", "; ".join(added))
    if not_added:
        logger.bind(code="migration_not_added").warning("migrations not added: {}", "; ".join(not_added))
