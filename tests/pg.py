"""Database chores shared by the fixtures, the fault tests and the bench: admin statements, migrations."""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from outbox.migrations import MigrationSettings
from service.store import migrations


def admin(dsn: str, *statements: str) -> list[tuple[object, ...]]:
    """Run statements outside a transaction (CREATE/DROP DATABASE); the last one's rows."""
    conn = psycopg2.connect(dsn)
    rows: list[tuple[object, ...]] = []
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()
    return rows


def drop_database(dsn: str) -> None:
    name = parse_dsn(dsn)["dbname"]
    admin(make_dsn(dsn, dbname="postgres"), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def migrate(outbox_dsn: str, target_dsn: str | None = None) -> None:
    """Apply the migrations as the service does at start-up (both sets to one database when shared)."""
    await migrations.migrate_dsns(outbox_dsn, target_dsn or outbox_dsn, MigrationSettings())
