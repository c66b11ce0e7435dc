"""`make bench BENCH_ARGS=--quick` runs end to end and prints its one table, every measurement in it (the
figures themselves are the bench's business, not the suite's; what was delivered and completed is not)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from service.config import PROJECT_DIR
from tests.bench.settings import LAGS_S

READS = ("interaction status", "/metrics", "/readyz")
BENCH_TIMEOUT_S = 300.0
MEASUREMENTS = (
    [
        "intake, aiohttp without database (ceiling): req/s (p50 / p99 ms)",
        "intake, one INSERT per request: req/s (p50 / p99 ms)",
        "intake, eco-outbox, relay delivering: req/s (p50 / p99 ms)",
        "intake: eco-outbox / one INSERT per request",
        "intake: eco-outbox / ceiling",
        "intake: p99 ms",
        "intake: 202s / rows in the target, all runs",
        "intake: errors (non-202 answers, socket errors)",
        "relay, backlog of 10,000 signals: rows/s",
        "relay, backlog of 10,000 module usages: rows/s",
        "relay, backlog of 10,000 votes (feedback, rewards, arm counts): rows/s",
        "202 -> row in target at 1,000/s: p50 / p99 ms",
        "ask-eco request -> prompt_ready: p50 / p99 ms",
        "200 SSE streams at once: completed (most open at once; rows in the target)",
        "SSE streams, a chunk every 100 ms: gap p50 / p99 ms",
        "SSE streams: resident memory per open stream (kB)",
    ]
    + [f"signals lost, parent {lag_s * 1000:,.0f} ms late (of 10)" for lag_s in LAGS_S]
    + [f"votes lost, parent {lag_s * 1000:,.0f} ms late (of 10; old: look up once, 404)" for lag_s in LAGS_S]
)
RETENTION_READS = [f"{read}, 30,000 outbox rows kept: p50 / p99 ms" for read in READS]


async def run_bench(server_dsn: str, module: str, *args: str) -> list[str]:
    """Run a bench module as `make bench` does, on `server_dsn`; its output lines, once it exited 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=PROJECT_DIR,
        env={**os.environ, "DATABASE_URL": server_dsn},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(BENCH_TIMEOUT_S):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode().splitlines()


@pytest.mark.slow
async def test_the_quick_bench_prints_one_full_table(server_dsn: str) -> None:
    lines = await run_bench(server_dsn, "tests.bench", "--quick")
    assert lines[0].startswith("eco-outbox bench (--quick): PostgreSQL ")
    table = [line for line in lines if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert rows[0] == ["measurement", "eco-outbox", "baseline", "target", "met"]
    assert set(rows[1][0]) == {"-"}
    assert [row[0] for row in rows[2:]] == MEASUREMENTS + RETENTION_READS
    for row in rows[2:]:
        assert len(row) == 5
        assert any(row[1:3]) and "n/a" not in row[1] + row[2], row
        assert row[4] in ("yes", "NO", ""), row
    met = {row[0]: row[4] for row in rows[2:]}
    # Whatever the speed: every 202 of the intake runs is a row in the target, and every stream completes.
    assert met["intake: 202s / rows in the target, all runs"] == "yes"
    assert met["200 SSE streams at once: completed (most open at once; rows in the target)"] == "yes"
    # Nothing acknowledged is lost, however late the parent; the seed strategy, which gives up after 150 ms,
    # loses every signal whose parent comes 10 s late.
    lost = {row[0]: (row[1], row[2]) for row in rows[2:] if row[0].startswith("signals lost")}
    assert {ours for ours, _ in lost.values()} == {"0"}
    assert lost[MEASUREMENTS[-1 - len(LAGS_S)]][1] == "10"
    # Votes too; the old backend's look-up, done once, loses every vote whose parent comes late at all.
    votes = {row[0]: (row[1], row[2]) for row in rows[2:] if row[0].startswith("votes lost")}
    assert {ours for ours, _ in votes.values()} == {"0"}
    assert votes[MEASUREMENTS[-1]][1] == "10"


@pytest.mark.slow
async def test_the_ab_bench_runs_both_sides_and_prints_medians(server_dsn: str) -> None:
    """`python -m tests.bench.ab`, this tree against itself: each side delivers the whole backlog."""
    lines = await run_bench(
        server_dsn, "tests.bench.ab", "relay", f"--base={PROJECT_DIR}", "--rounds=1", "--backlog=2000"
    )
    names = [line.split(" (")[0].split(":")[0] for line in lines]
    assert names == ["round 1 base", "round 1 this", "median base", "median this"]
    for line in lines:
        figures = json.loads(line.split(": ", 1)[1].split(" (load")[0])
        assert figures["delivered"] == 2000 and figures["rows_s"] > 0


@pytest.mark.slow
async def test_the_cpu_bench_counts_each_batch_sizes_cost(server_dsn: str) -> None:
    """`python -m tests.bench.cpu batches`: one line per batch size, PostgreSQL's and the relay's CPU."""
    lines = await run_bench(server_dsn, "tests.bench.cpu", "batches", "--sizes=1,20", "--rows=60")
    assert lines[0].startswith("rows per batch | PostgreSQL")
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[1:]]
    assert [row[0] for row in rows] == ["1", "20"]
    for row in rows:
        postgres_ms, python_ms = (float(cell.split()[0]) for cell in row[1:])
        assert postgres_ms > 0 and python_ms > 0, row
