"""Migrations beside a running release: one migrator among many, lock waits given up and retried, a deadline
of its own, concurrent index builds, optional files reported, and read-only commands that run no DDL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import aiopg
import psycopg2
import pytest
from psycopg2.extensions import make_dsn

from outbox.migrations import (
    Ledger,
    MigrationError,
    MigrationSettings,
    Outcome,
    in_order,
    load,
    migrate,
    schema_migrations,
)
from outbox.names import OutboxNames
from service.config import PROJECT_DIR
from service.store import migrations
from service.store.migrations import LEDGER, OUTBOX
from service.store.outbox_names import OUTBOX_NAMES
from tests.helpers import fetch, scalar, wait_for
from tests.pg import admin, drop_database

FAST = MigrationSettings(timeout_s=30.0, lock_timeout_ms=100, retry_pause_s=0.05)


async def migrate_folder(dsn: str, directory: Path, settings: MigrationSettings = FAST) -> Outcome:
    return await migrate(dsn, load(directory), LEDGER, settings)


def write(directory: Path, name: str, sql: str) -> Path:
    path = directory / name
    path.write_text(sql)
    return path


async def test_of_many_migrators_one_applies_each_file_once(server_dsn: str, tmp_path: Path) -> None:
    name = f"eco_mig_{tmp_path.name[-12:].lower().replace('-', '_')}"
    admin(server_dsn, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    try:
        outcomes = await asyncio.gather(
            *(migrations.migrate_dsns(dsn, dsn, FAST) for _ in range(4)), return_exceptions=False
        )
        applied = [version for outcome in outcomes for version in outcome[OUTBOX].applied]
        assert sorted(applied) == [m.version for _, files in migrations.plan(dsn, dsn) for m in files]
        assert len(applied) == len(set(applied))
    finally:
        admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_ddl_behind_a_lock_gives_way_to_writers_and_is_retried(
    database_url: str, db: aiopg.Pool, tmp_path: Path
) -> None:
    """A claim holds rows of the table: the ALTER waits at most lock_timeout, so an INSERT that comes while
    the migrator retries is not queued behind it; once the claim ends, the ALTER lands."""
    write(
        tmp_path, "900_outbox_probe.sql", "alter table eco_outbox.events add column if not exists probe int;"
    )
    holder = await aiopg.connect(database_url)
    cur = await holder.cursor()
    await cur.execute("BEGIN; LOCK TABLE eco_outbox.events IN ROW SHARE MODE")
    migrator = asyncio.create_task(migrate_folder(database_url, tmp_path))
    try:
        await wait_for(
            lambda: scalar(
                db, "select count(*) from pg_stat_activity where query like 'alter table eco_outbox%%'"
            ),
            lambda count: count > 0,
        )
        # The writer's INSERT needs ROW EXCLUSIVE, which the waiting ALTER would block: it lands while the
        # claim is still held, between the migrator's tries.
        await fetch(
            db,
            "insert into eco_outbox.events (kind, key, group_key, payload) values"
            " ('probe', gen_random_uuid(), gen_random_uuid(), '{}')",
        )
        assert not migrator.done()
    finally:
        await cur.execute("ROLLBACK")
        holder.close()
    outcome = await asyncio.wait_for(migrator, 30)
    assert outcome.applied == ["900_outbox_probe"]
    assert await scalar(db, "select count(*) from eco_outbox.events where kind = 'probe'") == 1


async def test_a_migration_that_cannot_get_its_lock_stops_at_its_own_deadline(
    database_url: str, db: aiopg.Pool, tmp_path: Path
) -> None:
    write(
        tmp_path, "900_outbox_probe.sql", "alter table eco_outbox.events add column if not exists probe int;"
    )
    holder = await aiopg.connect(database_url)
    cur = await holder.cursor()
    await cur.execute("BEGIN; LOCK TABLE eco_outbox.events IN ROW SHARE MODE")
    try:
        settings = MigrationSettings(timeout_s=1.0, lock_timeout_ms=100, retry_pause_s=0.1)
        with pytest.raises(MigrationError, match="900_outbox_probe not applied.*55P03"):
            await migrate_folder(database_url, tmp_path, settings)
    finally:
        await cur.execute("ROLLBACK")
        holder.close()
    assert (
        await scalar(db, "select count(*) from public.eco_schema_migrations where version like '900%%'") == 0
    )
    # The advisory lock went with the failed migrator: the next one proceeds.
    assert (await migrate_folder(database_url, tmp_path)).applied == ["900_outbox_probe"]


async def test_an_optional_concurrent_index_that_fails_is_reported_and_leaves_no_invalid_index(
    database_url: str, db: aiopg.Pool, tmp_path: Path
) -> None:
    await fetch(
        db,
        "insert into eco_outbox.events (kind, key, group_key, payload, dedupe_key) values"
        " ('probe', gen_random_uuid(), gen_random_uuid(), '{}', null),"
        " ('probe', gen_random_uuid(), gen_random_uuid(), '{}', null)",
    )
    write(
        tmp_path,
        "900_outbox_probe_idx.sql",
        "-- migrate: optional, concurrently: probes may repeat\n"
        "create unique index concurrently if not exists events_probe_idx on eco_outbox.events (kind)"
        " where kind = 'probe';\n",
    )
    outcome = await migrate_folder(database_url, tmp_path)
    assert outcome.applied == []
    assert outcome.not_added["900_outbox_probe_idx"].startswith("23505: could not create unique index")
    assert outcome.not_added["900_outbox_probe_idx"].endswith("without it, probes may repeat")
    assert await scalar(db, "select count(*) from pg_class where relname = 'events_probe_idx'") == 0
    assert (
        await scalar(db, "select count(*) from public.eco_schema_migrations where version like '900%%'") == 0
    )


def test_a_concurrently_file_holds_one_index_statement(tmp_path: Path) -> None:
    write(
        tmp_path,
        "900_outbox_two.sql",
        "-- migrate: concurrently\ncreate index concurrently if not exists a on eco_outbox.events (seq);\n"
        "create index concurrently if not exists b on eco_outbox.events (seq);\n",
    )
    with pytest.raises(ValueError, match="one `create"):
        load(tmp_path)


def test_two_files_of_one_number_are_refused(tmp_path: Path) -> None:
    """Their order would be left to chance: an engine's file and its user's, merged apart, say."""
    write(tmp_path, "900_outbox_one.sql", "select 1;")
    write(tmp_path, "900_target_two.sql", "select 2;")
    with pytest.raises(ValueError, match="two migrations have the number 900"):
        load(tmp_path)


def test_a_file_of_the_outbox_among_the_targets_files_is_refused(tmp_path: Path) -> None:
    """It would go to the target database when the two are apart: the outbox's files are the engine's."""
    write(tmp_path, "900_outbox_probe.sql", "select 1;")
    with pytest.raises(ValueError, match="outbox/sql/migrations/"):
        migrations.target_migrations(tmp_path)


def test_the_shipped_files_parse_and_their_target_indexes_are_built_concurrently() -> None:
    engine, target = schema_migrations(OUTBOX_NAMES), migrations.target_migrations()
    assert all("_outbox_" in m.version for m in engine) and all("_target_" in m.version for m in target)
    assert all(m.concurrently for m in target if "idx" in m.version)
    assert [m.version for m in in_order([*engine, *target]) if m.optional and not m.why] == []


async def test_the_engine_installs_its_schema_under_the_names_and_ledger_it_is_given(server_dsn: str) -> None:
    """Nothing of the service's names: the table, its indexes and the ledger are the caller's."""
    name = f"engine_names_{uuid.uuid4().hex[:12]}"
    admin(server_dsn, f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    names = OutboxNames(schema="queue", table="jobs", channel="queue_wake", metric_prefix="queue_")
    ledger = Ledger(schema="queue", table="migrations", lock="queue.migrations")
    try:
        outcome = await migrate(dsn, schema_migrations(names), ledger, FAST)
        assert outcome.applied == [m.version for m in schema_migrations(names)]
        async with aiopg.create_pool(dsn, minsize=1, maxsize=1) as pool:
            relations = await fetch(
                pool,
                "select relname from pg_class where relnamespace <> 'pg_catalog'::regnamespace"
                " and relnamespace <> 'information_schema'::regnamespace"
                " and relnamespace::regnamespace::text not like 'pg_toast%%' order by relname",
            )
            assert await scalar(pool, "select count(*) from queue.migrations") == len(outcome.applied)
        assert {row[0] for row in relations} >= {"jobs", "jobs_group_idx", "jobs_due_idx", "migrations"}
        assert [row[0] for row in relations if "eco" in row[0] or "events" in row[0]] == []
    finally:
        drop_database(dsn)


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR)},
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_read_only_commands_run_no_ddl(server_dsn: str, tmp_path: Path) -> None:
    name = f"eco_ro_{tmp_path.name[-12:].lower().replace('-', '_')}"
    admin(server_dsn, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    dsn = make_dsn(server_dsn, dbname=name)
    try:
        for action in ("stats", "dead"):
            result = run_cli(dsn, "outbox", action)
            assert result.returncode == 1, result.stderr
            assert result.stderr.strip().splitlines() == [
                "the outbox has no tables yet: start the service, or run `python -m service migrate`"
            ]
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "select count(*) from pg_class where relnamespace <> 'pg_catalog'::regnamespace"
                    " and relnamespace <> 'information_schema'::regnamespace"
                    " and relnamespace::regnamespace::text not like 'pg_toast%%'"
                )
                assert cur.fetchone()[0] == 0
        finally:
            conn.close()
        assert run_cli(dsn, "migrate").returncode == 0
        result = run_cli(dsn, "outbox", "stats")
        assert result.returncode == 0 and '"pending_total": 0' in result.stdout
    finally:
        admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
