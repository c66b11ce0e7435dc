"""`python -m tests.bench.ab intake|streams|relay|e2e --base DIR`: one bench stage, the code in DIR (e.g.
main: `git archive main | tar -x -C DIR`) against this tree, taking turns for `--rounds` rounds, each run in
a process of its own on the tree's code; prints every run, then each side's medians.

A lever worth a few percent is inside a shared machine's noise: alternating rounds give both sides the same
noise, and the service process's CPU seconds per 1,000 requests (utime + stime from /proc) moves less with
the machine's load than req/s does. The stage's work is the bench's (`tests/bench/stages.py`).

Both sides run this file, the driver's, on their own tree's imports: how a stage here starts the service
(say, `e2e`) is the driver's for both, so a lever goes in the tree's code, never in this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiopg

from service.runtime.logs import setup_logging
from tests.bench import database, processes, stages
from tests.bench.settings import BenchSettings
from tests.bench.wrk import run_wrk
from tests.pg import drop_database
from tests.service_process import ServiceProcess

STAGES = ("intake", "streams", "relay", "e2e")
RESULT_PREFIX = "AB_JSON "
RUN_TIMEOUT_S = 600.0
CPU_SAMPLE_S = 0.02
# Runs this file from the tree under test, so that every import (service, outbox, tests.bench) is that tree's.
CHILD = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def cpu_s(pid: int) -> float:
    """The service's user + system CPU seconds so far: the process and those it started (under the
    supervisor, its HTTP and relay processes). From /proc alone, so that it reads any tree's service."""
    ticks = 0
    for process in (pid, *Path(f"/proc/{pid}/task/{pid}/children").read_text().split()):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """The CPU seconds of the service processes a stage starts, sampled until each exits: the stage keeps
    its process to itself."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def install(self) -> None:
        start = processes.service

        def watched(*args: Any, **kwargs: Any) -> ServiceProcess:
            server = start(*args, **kwargs)
            self._tasks.append(asyncio.create_task(self._sample(server)))
            return server

        processes.service = watched

    async def _sample(self, server: ServiceProcess) -> None:
        while True:
            process = server.process
            if process is not None:
                if process.returncode is not None:
                    return
                try:
                    self.seconds[process.pid] = cpu_s(process.pid)
                except FileNotFoundError:
                    return
            await asyncio.sleep(CPU_SAMPLE_S)

    async def total_s(self) -> float:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return sum(self.seconds.values())


async def intake(pool: aiopg.Pool, dsn: str, scratch: Path, settings: BenchSettings) -> dict[str, float]:
    """One wrk run against the service (its relay delivering); CPU counted from wrk's start until every
    202 is in the target, so that the process's start-up is left out and its deliveries are in."""
    await database.reset(pool)
    parents = await database.insert_parents(pool, stages.PARENTS)
    async with processes.service(dsn, scratch) as server:
        assert server.process is not None
        before_s = cpu_s(server.process.pid)
        load = await run_wrk(
            server.url,
            parents,
            threads=settings.wrk_threads,
            connections=settings.connections,
            duration_s=settings.intake_s,
        )
        delivered = await stages._delivered(pool)
        used_s = cpu_s(server.process.pid) - before_s
    return {
        "req_s": round(load.per_s),
        "p99_ms": round(load.p99_ms, 1),
        "cpu_s_per_1k": round(used_s / load.acked * 1000, 4),
        "acked": load.acked,
        "delivered": delivered,
    }


async def streams(pool: aiopg.Pool, dsn: str, scratch: Path, settings: BenchSettings) -> dict[str, float]:
    """The streams stage; CPU over the service's whole life (start-up included, the same on both sides)."""
    watch = CpuWatch()
    watch.install()
    run = await stages.streams(pool, scratch, dsn, settings)
    return {
        "completed": run.completed,
        "gap_p50_ms": round(run.p50_gap_ms, 1),
        "gap_p99_ms": round(run.p99_gap_ms, 1),
        "cpu_s": round(await watch.total_s(), 2),
        "kb_per_stream": round(run.memory_per_stream_bytes / 1024, 1),
    }


async def relay(pool: aiopg.Pool, dsn: str, scratch: Path, settings: BenchSettings) -> dict[str, float]:
    run = await stages.relay(pool, dsn, settings)
    return {"rows_s": round(run.delivered / run.seconds), "delivered": run.delivered}


async def e2e(pool: aiopg.Pool, dsn: str, scratch: Path, settings: BenchSettings) -> dict[str, float]:
    """The 202 -> row stage, on a service process of its own."""
    async with processes.service(dsn, scratch) as server:
        run = await stages.end_to_end(pool, server, settings)
    return {"p50_ms": round(run.p50_ms, 1), "p99_ms": round(run.p99_ms, 1), "missing": run.missing}


async def one(stage: str, server: str, settings: BenchSettings) -> dict[str, float]:
    dsn = await database.create_bench_database(server)
    pool = await aiopg.create_pool(dsn, minsize=0, maxsize=5, enable_hstore=False)
    try:
        with tempfile.TemporaryDirectory(prefix="eco-ab-") as scratch:
            measure = {"intake": intake, "streams": streams, "relay": relay, "e2e": e2e}[stage]
            return await measure(pool, dsn, Path(scratch), settings)
    finally:
        pool.close()
        await pool.wait_closed()
        drop_database(dsn)


def run_side(tree: Path, stage: str, settings_args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, "-c", CHILD, str(Path(__file__).resolve()), "--one", stage, *settings_args]
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"{tree}: run failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(lines[0].removeprefix(RESULT_PREFIX))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--base", type=Path, help="the other tree (required unless --one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", action="store_true", help="one run of this tree, JSON out (the children)")
    parser.add_argument("--intake-s", type=float, default=BenchSettings.intake_s)
    parser.add_argument("--streams", type=int, default=BenchSettings.streams)
    parser.add_argument("--stream-cadence-ms", type=float, default=BenchSettings.stream_cadence_ms)
    parser.add_argument("--backlog", type=int, default=BenchSettings.backlog)
    args = parser.parse_args(argv)
    if not args.one and args.base is None:
        parser.error("--base is required")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = BenchSettings(
        intake_s=args.intake_s,
        streams=args.streams,
        stream_cadence_ms=args.stream_cadence_ms,
        backlog=args.backlog,
    )
    if args.one:
        server = os.environ.get("DATABASE_URL")
        if not server:
            raise SystemExit("set DATABASE_URL: both sides must run on the same server")
        # The relay stage runs in this process: its logs at the level the service would use in production.
        setup_logging(json_lines=False, level="WARNING")
        print(RESULT_PREFIX + json.dumps(asyncio.run(one(args.stage, server, settings))))
        return 0
    settings_args = [
        f"--intake-s={args.intake_s:g}",
        f"--streams={args.streams}",
        f"--stream-cadence-ms={args.stream_cadence_ms:g}",
        f"--backlog={args.backlog}",
    ]
    sides = {"base": args.base.resolve(), "this": Path(__file__).resolve().parents[2]}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for round_number in range(1, args.rounds + 1):
        for name, tree in sides.items():
            result = run_side(tree, args.stage, settings_args)
            results[name].append(result)
            load = os.getloadavg()[0]
            print(f"round {round_number} {name}: {json.dumps(result)} (load {load:.2f})", flush=True)
    for name, runs in results.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"median {name} ({sides[name]}): {json.dumps(medians)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
