"""`python -m tests.bench [--quick]` (`make bench BENCH_ARGS=--quick`): run every stage, print one table."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import aiopg

from service.logs import setup_logging
from tests.bench import database, processes, retention, stages
from tests.bench.report import Row, number, pair, render
from tests.bench.settings import QUICK, BenchSettings
from tests.pg import drop_database

TARGET_INTAKE_PER_S = 6500
TARGET_INTAKE_P99_MS = 25.0
TARGET_RELAY_PER_S = 40_000
TARGET_E2E_P99_MS = 50.0
TARGET_PROMPT_READY_P50_MS = 5.0


def parse_args(argv: list[str]) -> BenchSettings:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs and small counts (a smoke run)")
    parser.add_argument("--connections", type=int, help="intake load: concurrent connections (64)")
    parser.add_argument("--intake-s", type=float, help="intake load: measured seconds per run (10)")
    parser.add_argument("--workers", type=int, help="service processes for the multi-process figure (2)")
    parser.add_argument("--backlog", type=int, help="relay: signals in the backlog (100000)")
    parser.add_argument("--e2e-rate", type=float, dest="e2e_rate_per_s", help="end to end: signals/s (1000)")
    parser.add_argument("--asks", type=int, help="prompt_ready: ask-eco streams (500)")
    parser.add_argument("--lag-signals", type=int, help="lag: signals per lag and strategy (100)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else BenchSettings()
    overrides = {name: value for name, value in vars(args).items() if name != "quick" and value is not None}
    return dataclasses.replace(settings, **overrides)


def table_rows(
    settings: BenchSettings,
    intake: dict[str, stages.Intake],
    relay: stages.RelayRun,
    e2e: stages.Latency,
    ready: stages.Latency,
    lag: stages.LagRun,
) -> list[Row]:
    ours, plain, multi = intake["service"], intake["plain"], intake["service_multi"]
    rows = [
        Row(
            "signal intake, 1 process: req/s",
            number(ours.per_s),
            number(plain.per_s),
            f">= {TARGET_INTAKE_PER_S:,}",
            ours.per_s >= TARGET_INTAKE_PER_S,
        ),
        Row(
            "signal intake, 1 process: p50 / p99 ms",
            pair(ours.p50_ms, ours.p99_ms),
            pair(plain.p50_ms, plain.p99_ms),
            f"p99 <= {TARGET_INTAKE_P99_MS:g}",
            ours.p99_ms <= TARGET_INTAKE_P99_MS,
        ),
        Row(
            f"signal intake, {settings.workers} processes: req/s (p50 / p99 ms)",
            f"{number(multi.per_s)} ({pair(multi.p50_ms, multi.p99_ms)})",
            "",
            "",
            None,
        ),
        Row(
            "signal intake: non-202 answers (1 / N processes)",
            f"{ours.errors} / {multi.errors}",
            str(plain.errors),
            "0",
            ours.errors == 0 and multi.errors == 0,
        ),
        Row(
            f"relay, backlog of {relay.rows:,} signals: rows/s",
            f"{number(relay.per_s)} ({relay.delivered:,} delivered)",
            "",
            f">= {TARGET_RELAY_PER_S:,}",
            relay.per_s >= TARGET_RELAY_PER_S and relay.delivered == relay.rows,
        ),
        Row(
            f"202 -> row in target at {number(settings.e2e_rate_per_s)}/s: p50 / p99 ms",
            pair(e2e.p50_ms, e2e.p99_ms) + (f" ({e2e.missing} missing)" if e2e.missing else ""),
            "",
            f"p99 <= {TARGET_E2E_P99_MS:g}",
            e2e.p99_ms <= TARGET_E2E_P99_MS and e2e.missing == 0,
        ),
        Row(
            "ask-eco request -> prompt_ready: p50 / p99 ms",
            pair(ready.p50_ms, ready.p99_ms),
            "",
            f"p50 <= {TARGET_PROMPT_READY_P50_MS:g}",
            ready.p50_ms <= TARGET_PROMPT_READY_P50_MS and ready.missing == 0,
        ),
    ]
    for lag_s in settings.lags_s:
        rows.append(
            Row(
                f"signals lost, parent {number(lag_s * 1000)} ms late (of {lag.signals})",
                str(lag.lost_outbox[lag_s]),
                str(lag.lost_seed[lag_s]),
                "0",
                lag.lost_outbox[lag_s] == 0,
            )
        )
    return rows


async def run(settings: BenchSettings, scratch: Path, server: str, source: str) -> str:
    dsn = await database.create_bench_database(server)
    pool = await aiopg.create_pool(dsn, minsize=0, maxsize=20, enable_hstore=False)
    try:
        intake = await stages.intake_both(pool, dsn, scratch, settings)
        relay = await stages.relay(pool, dsn, settings)
        async with processes.service(dsn, scratch) as service:
            e2e = await stages.end_to_end(pool, service, settings)
            ready = await stages.prompt_ready(service, settings)
            lag = await stages.lag(pool, service, settings)
        reads = await retention.reads(pool, dsn, scratch, settings)
    finally:
        pool.close()
        await pool.wait_closed()
        drop_database(dsn)
    quick = " (--quick)" if settings == QUICK else ""
    version = database.server_version(server)
    title = f"eco-outbox bench{quick}: PostgreSQL {version} ({source}), {os.cpu_count()} CPUs"
    notes = [
        "database: "
        + (
            "a new embedded PostgreSQL, with wal_init_zero=off (steady state, not a new cluster's WAL growth)"
            if source == "embedded"
            else "DATABASE_URL's server, as configured"
        )
        + "; one database for every stage, emptied before each",
        "baseline: intake = a plain aiohttp handler with one INSERT per request into "
        "analytics.eco_passive_signals (tests/bench/plain.py, pool of 10); lost signals = the seed fix's "
        "direct insert, 3 attempts with waits of 50 and 100 ms",
        f"intake: closed loop, {settings.connections} keep-alive connections from a separate load-generator "
        f"process, {settings.intake_s:g} s measured after {settings.warmup_s:g} s of warm-up; the relay runs "
        "meanwhile and the parents exist",
        f"relay: the service's Relay in the bench process ({relay.loops} loops, batches of "
        f"{relay.batch_size}) draining the backlog; every parent exists",
        f"202 -> row: open loop over 16 connections for {settings.e2e_s:g} s; the row's time is stamped "
        "at its commit by a deferred trigger",
        f"prompt_ready: {settings.asks} SSE streams, 4 at a time, offline responder",
        f"lost: all lags at once; lag = time from the signal's request to its parent's row in the target; "
        f"outbox settled in {lag.seconds:.1f} s",
    ]
    rows = table_rows(settings, intake, relay, e2e, ready, lag) + retention.table_rows(reads)
    return render(title, rows, notes)


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    # The relay stage runs in this process: its logs at the level the service would use in production.
    setup_logging(json_lines=False, level="WARNING")
    scratch = Path(tempfile.mkdtemp(prefix="eco-bench-"))
    try:
        with database.database_server(scratch) as (server, source):
            print(asyncio.run(run(settings, scratch, server, source)))
    except BaseException:
        for log in sorted(scratch.glob("*.log")):
            print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
