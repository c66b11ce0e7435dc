"""The retention stage: the per-request reads (an interaction's status, a /metrics scrape, /readyz) with a
week of delivered rows kept in the outbox's log (3M rows: 5 signals/s for 7 days); each must cost what one
interaction holds, or what is waiting, never what is retained."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import aiopg

from tests.bench import database, processes
from tests.bench.loadgen import percentile
from tests.bench.report import Row, pair
from tests.bench.settings import QUICK, BenchSettings
from tests.helpers import fetch

RETAINED_ROWS = 3_000_000
RETAINED_ROWS_QUICK = 30_000
SIGNALS_PER_INTERACTION = 10
# Rows waiting or dead-lettered beside the retained ones, as a live outbox holds a few.
PENDING_ROWS = 1_000
DEAD_ROWS = 100
SAMPLES = 300
TARGET_MS = 10.0

# A week at 5 signals/s: one row every 200 ms, back from now; interactions of ten signals each, with ids
# derived from the row number so that the stage can ask for one it knows. The newest rows wait or are dead in
# the outbox table; the delivered ones are where this release keeps them, in its log of delivered rows.
_ROWS_SQL = """
FROM (
    SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n / %(per_interaction)s), 12, '0'))::uuid
               AS interaction_id,
           n, now() - n * interval '200 milliseconds' AS at,
           CASE WHEN n <= %(pending)s THEN 'pending'
                WHEN n <= %(pending)s + %(dead)s THEN 'dead' ELSE 'delivered' END AS state
    FROM generate_series(%(first)s, %(last)s) AS n
) AS rows
"""
FILL_SQL = (
    """
INSERT INTO eco_outbox.events
    (kind, key, group_key, payload, state, attempts, next_attempt_at, created_at, dead_at)
SELECT 'signal', gen_random_uuid(), interaction_id,
       jsonb_build_object('signal', 'view', 'interaction_id', interaction_id, 'meta', '{"type": "passive"}'),
       state, 1, at, at, CASE WHEN state = 'dead' THEN at END
"""
    + _ROWS_SQL
    + """WHERE state <> 'delivered';
INSERT INTO eco_outbox.events_delivered
    (key, kind, group_key, seq, attempts, created_at, delivered_at, summary)
SELECT gen_random_uuid(), 'signal', interaction_id, -n, 1, at, at,
       '{"signal": "view", "meta.type": "passive"}'
"""
    + _ROWS_SQL
    + "WHERE state = 'delivered'"
)
# Rows per INSERT: each statement stays well within the pool's query timeout.
FILL_CHUNK_ROWS = 250_000


@dataclass
class Reads:
    rows: int
    fill_s: float
    latencies_ms: dict[str, list[float]]


def interaction_of(row_number: int) -> str:
    return f"00000000-0000-4000-8000-{row_number // SIGNALS_PER_INTERACTION:012x}"


async def _timed_get(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url) as response:
        await response.read()
        assert response.status == 200, (url, response.status)
    return (time.perf_counter() - started) * 1000


async def time_reads(url: str, paths: dict[str, str]) -> dict[str, list[float]]:
    """One request at a time, the reads taking turns, so that whatever else loads the machine weighs on
    each of them alike."""
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    async with aiohttp.ClientSession() as session:
        for _ in range(SAMPLES):
            for name, path in paths.items():
                latencies[name].append(await _timed_get(session, url + path))
    return latencies


async def reads(pool: aiopg.Pool, dsn: str, log_dir: Path, settings: BenchSettings) -> Reads:
    """Fill the outbox with retained rows, then time each read, one request at a time, on the service."""
    rows = RETAINED_ROWS_QUICK if settings == QUICK else RETAINED_ROWS
    await database.reset(pool)
    started = time.perf_counter()
    fill = {"pending": PENDING_ROWS, "dead": DEAD_ROWS, "per_interaction": SIGNALS_PER_INTERACTION}
    for first in range(1, rows + 1, FILL_CHUNK_ROWS):
        await fetch(pool, FILL_SQL, {**fill, "first": first, "last": min(rows, first + FILL_CHUNK_ROWS - 1)})
    await fetch(pool, "VACUUM ANALYZE eco_outbox.events, eco_outbox.events_delivered")
    fill_s = time.perf_counter() - started
    paths = {
        "status": f"/api/interactions/{interaction_of(rows // 2)}/signals",
        "metrics": "/metrics",
        "readyz": "/readyz",
    }
    async with processes.service(dsn, log_dir, name="service-retention") as service:
        latencies = await time_reads(service.url, paths)
    await database.reset(pool)
    return Reads(rows, fill_s, latencies)


def table_rows(result: Reads) -> list[Row]:
    rows = []
    for name, label in (("status", "interaction status"), ("metrics", "/metrics"), ("readyz", "/readyz")):
        p50, p99 = percentile(result.latencies_ms[name], 50), percentile(result.latencies_ms[name], 99)
        rows.append(
            Row(
                f"{label}, {result.rows:,} outbox rows kept: p50 / p99 ms",
                pair(p50, p99),
                "",
                f"p50 <= {TARGET_MS:g}",
                p50 <= TARGET_MS,
            )
        )
    return rows
