"""Which databases the service talks to, and the connection pools it keeps for them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiopg

from service.config import Config
from service.store.embedded import start_embedded_postgres


@dataclass(frozen=True)
class Databases:
    """The outbox database and the target database (often the same server, never assumed to be)."""

    outbox_dsn: str
    target_dsn: str
    outbox: aiopg.Pool
    target: aiopg.Pool

    async def close(self) -> None:
        for pool in (self.outbox, self.target):
            pool.close()
        await asyncio.gather(self.outbox.wait_closed(), self.target.wait_closed())


async def resolve_dsns(config: Config) -> tuple[str, str]:
    """DATABASE_URL, or the embedded server started for it; TARGET_DATABASE_URL defaults to the same."""
    outbox_dsn = config.database_url
    if outbox_dsn is None:
        outbox_dsn = await asyncio.to_thread(start_embedded_postgres, config.data_dir)
    return outbox_dsn, config.target_database_url or outbox_dsn


async def create_pool(dsn: str, config: Config) -> aiopg.Pool:
    # minsize=0: the pool connects lazily, so a database that is down at start-up or later is a 503 per
    # request, not a crash; enable_hstore=False, or psycopg2 adapts dicts as hstore.
    return await aiopg.create_pool(
        dsn, minsize=0, maxsize=config.db_pool_max, timeout=config.db_timeout_s, enable_hstore=False
    )


async def open_databases(config: Config) -> Databases:
    outbox_dsn, target_dsn = await resolve_dsns(config)
    outbox = await create_pool(outbox_dsn, config)
    target = await create_pool(target_dsn, config)
    return Databases(outbox_dsn, target_dsn, outbox, target)
