"""The service's migrations: the engine's, which make its outbox table (outbox.migrations), and the target's,
numbered files in sql/ named NNN_target_<what>.sql; one runner (the engine's) and one ledger for both. When
the outbox and the target are one server, it gets both sets, in one number order.

The target's files follow the engine's rules (outbox.migrations): idempotent, expand-only, an optional first
line `-- migrate: <flag>[, <flag>]: <why>`. docs/deploys.md has the policy and how to write one.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiopg
from loguru import logger

from outbox.errors import CONNECTION_ERRORS, describe
from outbox.migrations import (
    Ledger,
    Migration,
    MigrationError,
    MigrationSettings,
    Outcome,
    load,
    migrate,
    schema_migrations,
)
from service.config import PROJECT_DIR
from service.store.database import Databases
from service.store.outbox_names import OUTBOX_NAMES

MIGRATIONS_DIR = PROJECT_DIR / "sql"
_TARGET_NAME = re.compile(r"^\d{3}_target_[a-z0-9_]+\.sql$")

# Every release since the first recorded its versions here, and its migrator held this lock: a release beside
# an earlier one must find both where that one left them.
LEDGER = Ledger(schema="public", table="eco_schema_migrations", lock="eco_outbox.migrations")

TARGET = "target"
OUTBOX = "outbox"


def target_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The target's files. A file of the outbox's here would be applied to the target database when the two
    are apart: the outbox's files are the engine's."""
    if strays := sorted(p.name for p in directory.glob("*.sql") if not _TARGET_NAME.match(p.name)):
        raise ValueError(
            f"{directory.name}/ holds the target's migrations (NNN_target_<what>.sql), not {strays}; the"
            " outbox's are the engine's, in outbox/sql/migrations/"
        )
    return load(directory)


def plan(outbox_dsn: str, target_dsn: str) -> list[tuple[str, list[Migration]]]:
    """Which migrations go to which database: both sets to one server when the DSNs are the same."""
    if outbox_dsn == target_dsn:
        return [(OUTBOX, schema_migrations(OUTBOX_NAMES, target_migrations()))]
    return [(TARGET, target_migrations()), (OUTBOX, schema_migrations(OUTBOX_NAMES))]


def roles(databases: Databases) -> list[tuple[str, aiopg.Pool, list[Migration]]]:
    """(role, pool, migrations) for each distinct database."""
    pools = {OUTBOX: databases.outbox, TARGET: databases.target}
    return [(role, pools[role], files) for role, files in plan(databases.outbox_dsn, databases.target_dsn)]


async def migrate_dsns(outbox_dsn: str, target_dsn: str, settings: MigrationSettings) -> dict[str, Outcome]:
    """Bring every database up to date; what was applied and what could not be, by role. A database that
    cannot be reached is a MigrationError naming it."""
    dsns = {OUTBOX: outbox_dsn, TARGET: target_dsn}
    outcomes: dict[str, Outcome] = {}
    for role, files in plan(outbox_dsn, target_dsn):
        try:
            outcomes[role] = await migrate(dsns[role], files, LEDGER, settings)
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
