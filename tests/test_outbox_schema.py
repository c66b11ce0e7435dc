"""The engine's migrations produce outbox/sql/schema.sql (the same columns, constraints and indexes of the
table and of its log of delivered rows): from an empty database, and from an outbox its earlier releases
made, at 008, before it and before 006. Those releases' files are kept in tests/outbox_history/ as they
shipped (1e63a9f's sql/), indexes on a kind of the target and all, and are applied by the same runner under
the same ledger, so the upgrade starts from the versions a production database records."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiopg
import pytest
from psycopg2.extensions import make_dsn

import outbox
from outbox.migrations import MigrationSettings, load, migrate, schema_migrations
from outbox.sql import script
from service.store.migrations import LEDGER
from service.store.outbox_names import OUTBOX_NAMES
from tests.helpers import fetch, scalar
from tests.pg import admin, drop_database

SCHEMA_SQL = Path(outbox.__file__).with_name("sql") / "schema.sql"
HISTORY_DIR = Path(__file__).with_name("outbox_history")
SETTINGS = MigrationSettings(timeout_s=30.0)
# What every earlier state has yet to apply after its own files: the contract of the kind indexes, the log.
LATER = [
    "017_outbox_retire_kind_indexes",
    "018_outbox_drop_retired_1_idx",
    "019_outbox_drop_retired_2_idx",
    "020_outbox_delivered_log",
]
# The last historical file each state applied, and the engine's files it has yet to apply.
UPGRADES = {
    "at 008": ("008_outbox_generic", ["005_outbox_group_column", *LATER]),
    "before 008": ("006_outbox_read_indexes", ["005_outbox_group_column", "008_outbox_generic", *LATER]),
    "before 006": (
        "003_outbox_dead_signals",
        ["005_outbox_group_column", "006_outbox_read_indexes", "008_outbox_generic", *LATER],
    ),
}

CATALOG = {
    "columns": """
        SELECT column_name, data_type, is_nullable, column_default, is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = %(schema)s AND table_name = %(table)s
        ORDER BY ordinal_position""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = %(schema)s AND tablename = %(table)s ORDER BY indexname""",
    # Not-null ones are the columns' nullability above; PostgreSQL 18 also lists them here, named after the
    # column they were made on (a migrated table keeps the name of a renamed column).
    "constraints": """
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = to_regclass(%(schema)s || '.' || %(table)s) AND contype <> 'n' ORDER BY conname""",
}


TABLES = (OUTBOX_NAMES.table, f"{OUTBOX_NAMES.table}_delivered")


async def catalog(pool: aiopg.Pool) -> dict[str, list[tuple[object, ...]]]:
    """Each table's columns, indexes and constraints."""
    found: dict[str, list[tuple[object, ...]]] = {}
    for table in TABLES:
        names = {"schema": OUTBOX_NAMES.schema, "table": table}
        for what, sql in CATALOG.items():
            found[f"{table} {what}"] = [tuple(row) for row in await fetch(pool, sql, names)]
    return found


@asynccontextmanager
async def empty_database(server_dsn: str) -> AsyncIterator[tuple[str, aiopg.Pool]]:
    name = f"outbox_schema_{uuid.uuid4().hex[:12]}"
    admin(make_dsn(server_dsn, dbname="postgres"), f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    try:
        async with aiopg.create_pool(dsn, minsize=1, maxsize=1) as pool:
            yield dsn, pool
    finally:
        drop_database(dsn)


async def schema_file_catalog(server_dsn: str) -> dict[str, list[tuple[object, ...]]]:
    async with empty_database(server_dsn) as (_, pool):
        await fetch(pool, script(SCHEMA_SQL, OUTBOX_NAMES.identifiers))
        return await catalog(pool)


async def made_by_history(dsn: str, state: str) -> None:
    """The outbox as the releases of that state left it: their files, recorded under their versions."""
    upto = UPGRADES[state][0]
    files = [m for m in load(HISTORY_DIR) if m.version <= upto]
    assert (await migrate(dsn, files, LEDGER, SETTINGS)).applied == [m.version for m in files]


async def test_the_migrations_from_empty_produce_the_schema_file(db: aiopg.Pool, server_dsn: str) -> None:
    migrated = await catalog(db)
    assert all(migrated.values()), "every table has columns, indexes and constraints"
    assert migrated == await schema_file_catalog(server_dsn)


@pytest.mark.parametrize("state", list(UPGRADES))
async def test_an_outbox_earlier_releases_made_upgrades_to_the_schema_file(
    server_dsn: str, state: str
) -> None:
    async with empty_database(server_dsn) as (dsn, pool):
        await made_by_history(dsn, state)
        assert await catalog(pool) != await schema_file_catalog(server_dsn)
        outcome = await migrate(dsn, schema_migrations(OUTBOX_NAMES), LEDGER, SETTINGS)
        assert outcome.applied == UPGRADES[state][1]
        assert await catalog(pool) == await schema_file_catalog(server_dsn)


async def test_rows_from_before_008_keep_their_group_under_its_new_name(server_dsn: str) -> None:
    """The first table called the group column by a name of the target; the engine's 008 finds it by its
    place, and the rows keep their values."""
    async with empty_database(server_dsn) as (dsn, pool):
        await made_by_history(dsn, "before 008")
        group = str(uuid.uuid4())
        [(first_name,)] = await fetch(
            pool,
            "select attname from pg_attribute where attrelid = 'eco_outbox.events'::regclass and attnum = 4",
        )
        await fetch(
            pool,
            f"insert into eco_outbox.events (kind, key, {first_name}, payload)"
            " values ('signal', gen_random_uuid(), %(group)s, '{}')",
            {"group": group},
        )
        await migrate(dsn, schema_migrations(OUTBOX_NAMES), LEDGER, SETTINGS)
        assert await scalar(pool, "select group_key::text from eco_outbox.events") == group
