"""The command line's database work: migrations and the outbox's dead letters."""

from __future__ import annotations

from loguru import logger

from service import migrations
from service.config import Config
from service.database import open_databases


async def run_migrate(config: Config) -> int:
    databases = await open_databases(config)
    try:
        for role, applied in (await migrations.migrate_databases(databases)).items():
            logger.info("{} database: {}", role, ", ".join(applied) if applied else "up to date")
    finally:
        await databases.close()
    return 0
