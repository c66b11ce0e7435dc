"""The engine installs and upgrades its own schema: numbered SQL files, applied once each, in number order,
by one migrator at a time, beside a running release. The same runner applies its user's own files.

The engine's files are outbox/sql/migrations/NNN_outbox_<what>.sql, under the names it is given
(`{schema}`, `{table}`: outbox.names); `schema_migrations()` lists them, with the user's files for the same
database, and `migrate()` applies what the ledger (named by the user: `Ledger`) does not hold yet. Every
file is idempotent (`if not exists`) and expand-only: it never drops or renames what the release before it
reads or writes.

How a file runs, said by an optional first line `-- migrate: <flag>[, <flag>]: <why>`:
- no flag: the whole file in one transaction;
- `concurrently`: the file is one `create [unique] index concurrently if not exists <name> on <schema>.<table>
  ...` or `drop index concurrently if exists <schema>.<name>` statement, run outside a transaction, so that
  it does not block the table's writers; an invalid index a failed build left behind is dropped before the
  next try;
- `optional`: its user works without what the file adds (the text after the colon says what is lost): a
  failure (a lock wait, once its retries ran out at the deadline) is reported in the outcome, not fatal, and
  tried again at the next run. Such a file is not recorded until it succeeds.

Every migrator takes a session advisory lock first (N processes, one migrator; the others wait, then find
nothing to do), on its own connection with its own deadline (never a pool's client timeout). Every
statement runs under `lock_timeout`: DDL waiting for a lock queues every later statement on the table
behind it, so it gives up quickly, and the file is tried again after a pause, until the deadline.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiopg
import psycopg2
from loguru import logger

from outbox.errors import describe, sqlstate
from outbox.names import OutboxNames
from outbox.sql import Statements, identifier, script
from outbox.sqlutil import transaction

SQL_DIR = Path(__file__).with_name("sql")
MIGRATIONS_DIR = SQL_DIR / "migrations"
MIGRATOR_SQL = SQL_DIR / "migrator.sql"

_NAME = re.compile(r"^(?P<number>\d{3})_[a-z0-9_]+\.sql$")
_FLAGS = re.compile(r"^--\s*migrate:\s*(?P<flags>[\w ,]+?)\s*(?::\s*(?P<why>.*))?$")
_CONCURRENT = re.compile(
    r"^\s*(?:create\s+(?:unique\s+)?index\s+concurrently\s+if\s+not\s+exists\s+(?P<name>\w+)\s+on\s+"
    r"(?:only\s+)?(?P<schema>\w+)\.\w+\b[^;]*|drop\s+index\s+concurrently\s+if\s+exists\s+\w+\.\w+)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
CONCURRENTLY = "concurrently"
OPTIONAL = "optional"
KNOWN_FLAGS = frozenset({CONCURRENTLY, OPTIONAL})

# A lock wait given up (55P03), a deadlock (40P01): someone else held the table; try again after a pause.
RETRIED_SQLSTATES = frozenset({"55P03", "40P01"})


@dataclass(frozen=True)
class MigrationSettings:
    """A migrator's bounds."""

    # Its own deadline, lock waits, retries and index builds included: not a pool's client timeout.
    timeout_s: float = 300.0
    # A migration statement gives up a lock wait after this: while DDL waits, the table's writers queue
    # behind it.
    lock_timeout_ms: int = 2000
    # The pause before trying a file again after a lock wait given up, or the lock again.
    retry_pause_s: float = 1.0


@dataclass(frozen=True)
class Ledger:
    """The table that records the versions applied, and the name of the advisory lock a migrator holds:
    its user's to name, so that the engine's files and the user's share one ledger and one migrator."""

    schema: str
    table: str
    lock: str

    def __post_init__(self) -> None:
        identifier(self.schema)
        identifier(self.table)


class MigrationError(RuntimeError):
    """A required migration could not be applied before the deadline; the message says which and why."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str
    flags: frozenset[str] = frozenset()
    # For an optional file: what its user lacks without it.
    why: str = ""

    @property
    def number(self) -> int:
        return int(self.version[:3])

    @property
    def optional(self) -> bool:
        return OPTIONAL in self.flags

    @property
    def concurrently(self) -> bool:
        return CONCURRENTLY in self.flags

    def built_index(self) -> tuple[str, str] | None:
        """The (schema, name) of the index a `concurrently` file builds; None for any other file."""
        match = _CONCURRENT.match(_without_comments(self.sql)) if self.concurrently else None
        return (match["schema"], match["name"]) if match and match["name"] else None


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def _parse(path: Path, identifiers: Mapping[str, str] | None) -> Migration:
    if _NAME.match(path.name) is None:
        raise ValueError(f"migration file name not of the form NNN_<what>.sql: {path.name}")
    sql = path.read_text(encoding="utf-8") if identifiers is None else script(path, identifiers)
    first = sql.splitlines()[:1]
    flags: frozenset[str] = frozenset()
    why = ""
    if first and (header := _FLAGS.match(first[0].strip())):
        flags = frozenset(flag.strip() for flag in header["flags"].split(",") if flag.strip())
        why = header["why"] or ""
        if unknown := flags - KNOWN_FLAGS:
            raise ValueError(f"{path.name}: unknown migrate flags {sorted(unknown)}")
    migration = Migration(path.stem, sql, flags, why)
    if migration.concurrently and _CONCURRENT.match(_without_comments(sql)) is None:
        raise ValueError(
            f"{path.name}: a `concurrently` file holds one `create [unique] index concurrently if not exists"
            " <name> on <schema>.<table> ...` or `drop index concurrently if exists <schema>.<name>`"
            " statement"
        )
    return migration


def load(directory: Path, identifiers: Mapping[str, str] | None = None) -> list[Migration]:
    """The files of a folder, in number order: templates whose identifiers are put in, or, without
    `identifiers`, plain SQL taken as it is."""
    return in_order(_parse(path, identifiers) for path in directory.glob("*.sql"))


def in_order(migrations: Iterable[Migration]) -> list[Migration]:
    """By number; two files of one number would leave their order to chance, so they are refused."""
    ordered = sorted(migrations, key=lambda m: m.version)
    for before, after in itertools.pairwise(ordered):
        if before.number == after.number:
            raise ValueError(
                f"two migrations have the number {before.number:03}: {before.version}, {after.version}"
            )
    return ordered


def schema_migrations(names: OutboxNames, others: Iterable[Migration] = ()) -> list[Migration]:
    """The engine's migrations under `names`, with its user's `others` for the same database, in one number
    order: what `migrate()` applies to install or upgrade the engine's schema."""
    return in_order([*load(MIGRATIONS_DIR, {"schema": names.schema, "table": names.table}), *others])


@functools.cache
def _statements(ledger: Ledger) -> Statements:
    return Statements(MIGRATOR_SQL, {"ledger_schema": ledger.schema, "ledger_table": ledger.table})


@dataclass
class Outcome:
    """What one migrator did to one database: versions applied now, and optional ones it could not apply,
    with why."""

    applied: list[str] = field(default_factory=list)
    not_added: dict[str, str] = field(default_factory=dict)


async def applied_versions(pool: aiopg.Pool, ledger: Ledger) -> set[str]:
    """Read-only: the ledger's versions (none when it does not exist yet)."""
    sql = _statements(ledger)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(sql["ledger_exists"].sql)
        (exists,) = await cur.fetchone()
        if not exists:
            return set()
        await cur.execute(sql["applied"].sql)
        return {row[0] for row in await cur.fetchall()}


async def pending(
    pool: aiopg.Pool, migrations: list[Migration], ledger: Ledger
) -> tuple[list[str], list[Migration]]:
    """Read-only: (required versions not applied, optional migrations not applied)."""
    applied = await applied_versions(pool, ledger)
    missing = [m for m in migrations if m.version not in applied]
    return [m.version for m in missing if not m.optional], [m for m in missing if m.optional]


class _Migrator:
    def __init__(
        self, cur: aiopg.Cursor, ledger: Ledger, settings: MigrationSettings, deadline: float
    ) -> None:
        self._cur = cur
        self._ledger = ledger
        self._sql = _statements(ledger)
        self._settings = settings
        self._deadline = deadline

    def _left_s(self) -> float:
        return self._deadline - time.monotonic()

    async def lock(self) -> None:
        """Wait for the advisory lock without holding a statement open: the wait is bounded by the deadline,
        and a migrator that dies while holding it releases it with its session."""
        while True:
            await self._cur.execute(self._sql["try_lock"].sql, {"lock": self._ledger.lock})
            if (await self._cur.fetchone())[0]:
                return
            if self._left_s() <= 0:
                raise MigrationError("another migrator held the migration lock until the deadline")
            await asyncio.sleep(min(self._settings.retry_pause_s, max(self._left_s(), 0)))

    async def unlock(self) -> None:
        await self._cur.execute(self._sql["unlock"].sql, {"lock": self._ledger.lock})

    async def applied(self) -> set[str]:
        await self._cur.execute(self._sql["create_ledger"].sql)
        await self._cur.execute(self._sql["applied"].sql)
        return {row[0] for row in await self._cur.fetchall()}

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
        record = self._sql["record"].sql
        if migration.concurrently:
            await self.drop_invalid_index(migration)
            await cur.execute(migration.sql)
            await cur.execute(record, {"version": migration.version})
            return
        async with transaction(cur):
            await cur.execute(migration.sql)
            await cur.execute(record, {"version": migration.version})

    async def drop_invalid_index(self, migration: Migration) -> None:
        """A failed concurrent build leaves an invalid index that `if not exists` would take for done, and
        that a unique one still enforces on new rows."""
        if (index := migration.built_index()) is None:
            return
        schema, name = index
        await self._cur.execute(self._sql["invalid_index"].sql, {"schema": schema, "name": name})
        if await self._cur.fetchone():
            # The names come from the file's own statement, checked as identifiers: the one statement whose
            # identifiers are known only per call.
            await self._cur.execute(
                f"DROP INDEX CONCURRENTLY IF EXISTS {identifier(schema)}.{identifier(name)}"
            )


async def migrate(
    dsn: str, migrations: list[Migration], ledger: Ledger, settings: MigrationSettings
) -> Outcome:
    """Apply what the ledger lacks of `migrations` to the database at `dsn`, one file at a time, in their
    order; raises MigrationError when a required file cannot be applied before `settings.timeout_s`."""
    deadline = time.monotonic() + settings.timeout_s
    outcome = Outcome()
    # Its own connection: a pool's client timeout (seconds) must not cut a lock wait or an index build.
    async with aiopg.connect(dsn, timeout=settings.timeout_s, enable_hstore=False) as conn:
        async with conn.cursor() as cur:
            migrator = _Migrator(cur, ledger, settings, deadline)
            await cur.execute(
                _statements(ledger)["set_lock_timeout"].sql,
                {"lock_timeout_ms": int(settings.lock_timeout_ms)},
            )
            await migrator.lock()
            try:
                applied = await migrator.applied()
                for migration in migrations:
                    if migration.version in applied:
                        continue
                    try:
                        await migrator.apply(migration)
                    except psycopg2.Error as exc:
                        reason = describe(exc)
                        if not migration.optional:
                            raise MigrationError(f"{migration.version} not applied ({reason})") from exc
                        await migrator.drop_invalid_index(migration)
                        outcome.not_added[migration.version] = f"{reason}; without it, {migration.why}"
                        continue
                    outcome.applied.append(migration.version)
            finally:
                if not cur.closed:
                    await migrator.unlock()
    return outcome
