"""Fixtures: a real PostgreSQL (DATABASE_URL, or an embedded one), a migrated template database, and a fresh
database cloned from it for every test; the app is built by the same factory that `make run` serves."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiopg
import pytest
from aiohttp.test_utils import TestClient
from psycopg2.extensions import make_dsn

from outbox.backoff import Backoff
from outbox.relay import RelaySettings
from service.app import create_app
from service.config import Config
from service.store.embedded import start_embedded_postgres
from tests.pg import admin, drop_database, migrate

# The `browser` fixture of the page tests (headless Chromium).
pytest_plugins = ["tests.browser"]

# Fast retries and polls keep the suite short; the logic under test is the same as with the defaults.
TEST_RELAY = RelaySettings(poll_s=0.2, max_attempts=20, backoff=Backoff(base_ms=10, cap_ms=200))


def start_server(directory: Path) -> str:
    """A private PostgreSQL (for tests that need a second server, or when no DATABASE_URL is given)."""
    return start_embedded_postgres(directory)


@pytest.fixture(scope="session")
def server_dsn() -> str:
    if url := os.environ.get("DATABASE_URL"):
        return url
    # Not under tmp_path: pytest resets its base folder to mode 0700 when another session starts, and the
    # server runs as its own user. Registered before the server, the removal runs after its atexit stop.
    directory = Path(tempfile.mkdtemp(prefix="eco-test-pg-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return start_server(directory)


def create_template(server: str) -> str:
    name = f"eco_template_{os.getpid()}"
    admin(server, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    asyncio.run(migrate(make_dsn(server, dbname=name)))
    return name


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    name = create_template(server_dsn)
    yield name
    admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def clone_database(server: str, template: str) -> str:
    name = f"eco_test_{uuid.uuid4().hex[:12]}"
    admin(server, f"CREATE DATABASE {name} TEMPLATE {template}")
    return make_dsn(server, dbname=name)


@pytest.fixture
def database_url(server_dsn: str, template_db: str) -> Iterator[str]:
    dsn = clone_database(server_dsn, template_db)
    yield dsn
    drop_database(dsn)


def test_config(database_url: str, **overrides: Any) -> Config:
    base = replace(Config(), database_url=database_url, offline_chunk_delay_ms=0.0, relay=TEST_RELAY)
    return replace(base, **overrides)


@pytest.fixture
def make_config(database_url: str) -> Callable[..., Config]:
    return lambda **overrides: test_config(database_url, **overrides)


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
async def client(config: Config, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(config))


@pytest.fixture
def make_client(make_config: Callable[..., Config], aiohttp_client: Any) -> Callable[..., Any]:
    """Build a client on an app with config overrides; torn down before the test's database is dropped."""

    async def build(**overrides: Any) -> TestClient:
        return await aiohttp_client(create_app(make_config(**overrides)))

    return build


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[aiopg.Pool]:
    """A pool on the test's database, for the tests' own checks."""
    pool = await aiopg.create_pool(database_url, minsize=0, maxsize=4, enable_hstore=False)
    yield pool
    pool.close()
    await pool.wait_closed()
