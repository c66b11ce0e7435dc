"""Purge delivered rows after the retention period, and dead rows after theirs, in small batches that never
hold up the relay."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiopg
from loguru import logger

from outbox.background import BackgroundTask
from outbox.errors import CONNECTION_ERRORS, classify, describe
from outbox.names import OutboxNames
from outbox.queries import queries
from outbox.sql import Statement


async def _purge(pool: aiopg.Pool, statement: Statement, retention_s: float, batch: int) -> int:
    total = 0
    while True:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(statement.sql, dict(retention_s=retention_s, limit=batch))
            deleted = cur.rowcount
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)


async def purge_delivered(pool: aiopg.Pool, names: OutboxNames, retention_s: float, batch: int) -> int:
    """Delete delivered rows older than `retention_s`, `batch` rows per statement: those in the log, and those
    a previous release marked in place; returns how many."""
    sql = queries(names)
    logged = await _purge(pool, sql["purge_delivered_log"], retention_s, batch)
    return logged + await _purge(pool, sql["purge_delivered"], retention_s, batch)


async def purge_dead(pool: aiopg.Pool, names: OutboxNames, retention_s: float, batch: int) -> int:
    """Delete rows dead for longer than `retention_s`, `batch` rows per statement; returns how many."""
    return await _purge(pool, queries(names)["purge_dead_batch"], retention_s, batch)


@dataclass(frozen=True)
class PurgeSettings:
    """How long delivered and dead rows are kept, and how the purger removes them."""

    retention_s: float = 7 * 24 * 3600.0
    # Dead rows are purged too, after their own retention: orphans anyone may post must not pile up forever.
    dead_retention_s: float = 7 * 24 * 3600.0
    # Rows per DELETE: a short statement that never holds up the relay.
    batch: int = 1000
    interval_s: float = 60.0


class Purger(BackgroundTask):
    """Runs `purge_delivered` and `purge_dead` every `settings.interval_s` until stopped."""

    task_name = "outbox-purger"

    def __init__(self, pool: aiopg.Pool, names: OutboxNames, settings: PurgeSettings) -> None:
        super().__init__(names)
        self._pool = pool
        self._names = names
        self._settings = settings

    async def _run(self) -> None:
        settings = self._settings
        while True:
            try:
                purged = await purge_delivered(self._pool, self._names, settings.retention_s, settings.batch)
                dead = await purge_dead(self._pool, self._names, settings.dead_retention_s, settings.batch)
                self.health.succeeded()
                if purged or dead:
                    logger.info("purged {} delivered and {} dead outbox rows", purged, dead)
            except CONNECTION_ERRORS as exc:
                self.health.failed(classify(exc), describe(exc))
                logger.bind(code="db_unavailable").warning("outbox purge skipped: {}", exc)
            await asyncio.sleep(settings.interval_s)
