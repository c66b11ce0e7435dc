"""The outbox's migrations (sql/002..008, 017) from an empty database produce outbox/sql/schema.sql: the same
columns, constraints and indexes of the table and of its log of delivered rows, but for the partial indexes on
a kind left for a later release to drop."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiopg
from psycopg2.extensions import make_dsn

import outbox
from outbox.sql import script
from service.store.outbox_names import OUTBOX_NAMES
from tests.helpers import fetch
from tests.pg import admin, drop_database

SCHEMA_SQL = Path(outbox.__file__).with_name("sql") / "schema.sql"
# Made by sql/002 and sql/003 on the kind 'signal'; the engine uses neither (docs/deploys.md).
LEFT_TO_DROP = ("events_waiting_idx", "events_dead_signals_idx")

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


async def test_the_migrations_from_empty_produce_the_schema_file(db: aiopg.Pool, server_dsn: str) -> None:
    migrated = await catalog(db)
    indexes = f"{OUTBOX_NAMES.table} indexes"
    migrated[indexes] = [row for row in migrated[indexes] if row[0] not in LEFT_TO_DROP]
    assert all(migrated.values()), "every table has columns, indexes and constraints"

    name = f"schema_file_{uuid.uuid4().hex[:12]}"
    admin(make_dsn(server_dsn, dbname="postgres"), f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    try:
        async with aiopg.create_pool(dsn, minsize=1, maxsize=1) as pool:
            await fetch(pool, script(SCHEMA_SQL, OUTBOX_NAMES.identifiers))
            from_file = await catalog(pool)
    finally:
        drop_database(dsn)
    assert from_file == migrated
