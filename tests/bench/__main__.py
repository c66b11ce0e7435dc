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

from service.runtime.logs import setup_logging
from tests.bench import database, processes, retention, stages
from tests.bench.report import Row, number, pair, render
from tests.bench.settings import QUICK, BenchSettings
from tests.bench.wrk import WrkRun
from tests.pg import drop_database

# The targets are ratios to what the same machine does in the same run, so that they hold on any machine.
TARGET_INTAKE_VS_ONE_INSERT = 1.4
TARGET_INTAKE_VS_CEILING = 0.40
TARGET_INTAKE_P99_MS = 15.0
TARGET_RELAY_PER_S = 80_000
# Votes cost the target four statements a batch where a signal costs one (feedback rows, first rewards,
# changed rewards, arm counts), the arm counts taken in one order by every relay.
TARGET_VOTES_PER_S = 20_000
TARGET_E2E_P99_MS = 20.0
TARGET_PROMPT_READY_P50_MS = 5.0
# The p99 gap between a stream's chunks, in multiples of the responder's pause before each chunk.
TARGET_STREAM_GAP_CADENCES = 3.0


def parse_args(argv: list[str]) -> BenchSettings:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs and small counts (a smoke run)")
    parser.add_argument("--connections", type=int, help="intake load: wrk's connections (64)")
    parser.add_argument("--wrk-threads", type=int, help="intake load: wrk's threads (2)")
    parser.add_argument("--intake-s", type=float, help="intake load: seconds per wrk run (8)")
    parser.add_argument("--repeats", type=int, help="intake load: runs per server, median reported (3)")
    parser.add_argument("--backlog", type=int, help="relay: rows in each drain's backlog (100000)")
    parser.add_argument("--e2e-rate", type=float, dest="e2e_rate_per_s", help="end to end: signals/s (5000)")
    parser.add_argument("--asks", type=int, help="prompt_ready: ask-eco streams (500)")
    parser.add_argument("--streams", type=int, help="concurrent ask-eco streams (2000)")
    parser.add_argument(
        "--stream-cadence-ms", type=float, help="streams: the responder's pause per chunk (100)"
    )
    parser.add_argument("--lag-signals", type=int, help="lag: signals per lag and strategy (100)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else BenchSettings()
    overrides = {name: value for name, value in vars(args).items() if name != "quick" and value is not None}
    return dataclasses.replace(settings, **overrides)


def _load(load: WrkRun) -> str:
    return f"{number(load.per_s)} ({pair(load.p50_ms, load.p99_ms)})"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _delivered(intake: stages.Intake) -> str:
    return f"{intake.acked:,} / {intake.delivered:,}"


def intake_rows(settings: BenchSettings, intake: dict[str, stages.Intake]) -> list[Row]:
    ceiling, one_insert, ours = intake["ceiling"], intake["one_insert"], intake["service"]
    vs_one_insert = ours.median.per_s / one_insert.median.per_s
    vs_ceiling = ours.median.per_s / ceiling.median.per_s
    delivered = ours.all_delivered(settings.connections) and one_insert.all_delivered(settings.connections)
    return [
        Row(
            "intake, aiohttp without database (ceiling): req/s (p50 / p99 ms)",
            "",
            _load(ceiling.median),
            "",
            None,
        ),
        Row("intake, one INSERT per request: req/s (p50 / p99 ms)", "", _load(one_insert.median), "", None),
        Row("intake, eco-outbox, relay delivering: req/s (p50 / p99 ms)", _load(ours.median), "", "", None),
        Row(
            "intake: eco-outbox / one INSERT per request",
            _ratio(vs_one_insert),
            "",
            f">= {_ratio(TARGET_INTAKE_VS_ONE_INSERT)}",
            vs_one_insert >= TARGET_INTAKE_VS_ONE_INSERT,
        ),
        Row(
            "intake: eco-outbox / ceiling",
            _ratio(vs_ceiling),
            "",
            f">= {_ratio(TARGET_INTAKE_VS_CEILING)}",
            vs_ceiling >= TARGET_INTAKE_VS_CEILING,
        ),
        Row(
            "intake: p99 ms",
            number(ours.median.p99_ms, 1),
            number(one_insert.median.p99_ms, 1),
            f"<= {TARGET_INTAKE_P99_MS:g}",
            ours.median.p99_ms <= TARGET_INTAKE_P99_MS,
        ),
        Row(
            "intake: 202s / rows in the target, all runs",
            _delivered(ours),
            _delivered(one_insert),
            "every 202",
            delivered,
        ),
        Row(
            "intake: errors (non-202 answers, socket errors)",
            str(ours.errors),
            f"{one_insert.errors} / {ceiling.errors}",
            "0",
            ours.errors == one_insert.errors == ceiling.errors == 0,
        ),
    ]


# The relay drains: the backlog's kind, its name in the table, and the target it is held to.
DRAINS = {
    "signal": ("signals", TARGET_RELAY_PER_S),
    "module_usage": ("module usages", TARGET_RELAY_PER_S),
    "feedback": ("votes (feedback, rewards, arm counts)", TARGET_VOTES_PER_S),
}


def drain_rows(drains: dict[str, stages.RelayRun]) -> list[Row]:
    rows = []
    for kind, run in drains.items():
        name, target = DRAINS[kind]
        rows.append(
            Row(
                f"relay, backlog of {run.rows:,} {name}: rows/s",
                f"{number(run.per_s)} ({run.delivered:,} delivered)",
                "",
                f">= {target:,}",
                run.per_s >= target and run.delivered == run.rows,
            )
        )
    return rows


def table_rows(
    settings: BenchSettings,
    intake: dict[str, stages.Intake],
    drains: dict[str, stages.RelayRun],
    e2e: stages.Latency,
    ready: stages.Latency,
    streams: stages.StreamsRun,
    lag: stages.LagRun,
) -> list[Row]:
    gap_target_ms = TARGET_STREAM_GAP_CADENCES * streams.cadence_ms
    rows = [
        *intake_rows(settings, intake),
        *drain_rows(drains),
        Row(
            f"202 -> row in target at {number(settings.e2e_rate_per_s)}/s: p50 / p99 ms",
            pair(e2e.p50_ms, e2e.p99_ms)
            + f" (of {e2e.samples:,})"
            + (f" ({e2e.missing} missing)" if e2e.missing else ""),
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
        Row(
            f"{streams.streams:,} SSE streams at once: completed (most open at once; rows in the target)",
            f"{streams.completed:,} ({streams.peak_open:,}; {streams.delivered:,})",
            "",
            "all",
            streams.completed == streams.delivered == streams.streams,
        ),
        Row(
            f"SSE streams, a chunk every {number(streams.cadence_ms)} ms: gap p50 / p99 ms",
            pair(streams.p50_gap_ms, streams.p99_gap_ms),
            "",
            f"p99 <= {gap_target_ms:g}",
            streams.p99_gap_ms <= gap_target_ms,
        ),
        Row(
            "SSE streams: resident memory per open stream (kB)",
            number(streams.memory_per_stream_bytes / 1024, 1),
            "",
            "",
            None,
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
    for lag_s in settings.lags_s:
        rows.append(
            Row(
                f"votes lost, parent {number(lag_s * 1000)} ms late"
                f" (of {lag.signals}; old: look up once, 404)",
                str(lag.lost_votes_outbox[lag_s]),
                str(lag.lost_votes_seed[lag_s]),
                "0",
                lag.lost_votes_outbox[lag_s] == 0,
            )
        )
    return rows


async def run(settings: BenchSettings, scratch: Path, server: str, source: str) -> str:
    dsn = await database.create_bench_database(server)
    pool = await aiopg.create_pool(dsn, minsize=0, maxsize=20, enable_hstore=False)
    try:
        intake = await stages.intake_side_by_side(pool, dsn, scratch, settings)
        drains = {kind: await stages.relay(pool, dsn, settings, kind) for kind in DRAINS}
        streams = await stages.streams(pool, scratch, dsn, settings)
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
        "baselines: intake = an aiohttp handler that answers 202 without a database (the ceiling, "
        "tests/bench/ceiling.py) and one with one INSERT per request into analytics.eco_passive_signals "
        "(tests/bench/plain.py, aiopg pool of 10); lost signals = the seed fix's direct insert, 3 attempts "
        "with waits of 50 and 100 ms",
        f"intake: wrk, {settings.wrk_threads} threads, {settings.connections} keep-alive connections, "
        f"{settings.intake_s:g} s per run; the three servers take turns, {settings.repeats} runs each, the "
        "median run (by req/s) shown; the relay runs meanwhile, the parents exist, and after each run the "
        "rows are counted in the target once the outbox has nothing pending",
        f"relay: the service's Relay in the bench process ({drains['signal'].loops} loops, batches of "
        f"{drains['signal'].batch_size}) draining each backlog; every parent exists; each statement timed "
        "(its round trip included), named by its section in the .sql files",
        *(f"relay, {DRAINS[kind][0]}: {run.timings.summary()}" for kind, run in drains.items()),
        f"202 -> row: open loop over {stages.E2E_CONNECTIONS} connections for {settings.e2e_s:g} s; the "
        "row's time is stamped at its commit by a deferred trigger",
        f"prompt_ready: {settings.asks} SSE streams, 4 at a time, offline responder",
        f"SSE streams: {settings.streams:,} connections opened, then every request sent at once, to one "
        "service process; gap = time between a stream's successive chunk events at the client; memory = the "
        "process's peak resident memory while they run, less its resident memory before, per stream",
        f"lost: all lags at once; lag = time from the signal's request to its parent's row in the target; "
        f"outbox settled in {lag.seconds:.1f} s",
    ]
    rows = table_rows(settings, intake, drains, e2e, ready, streams, lag) + retention.table_rows(reads)
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
