"""`python -m tests.bench.drain [--runs 20]`: the interactions-and-signals backlog drained with the default
relay settings, run after run, to see that no drain waits out a backoff (a missed release of a child held for
its parent costs the 30 s cap). Prints each drain's time, the median and the worst to median ratio; exits 1
when a drain took longer than `--limit` times the median.

The backlog is ordered as intake writes it: each interaction, then its signals. The two delivery loops claim
it in batches of 1,000, so a signal is often claimed in one loop's batch while its interaction is in the
other's: the path of the release race.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiopg

from outbox.enqueue import encode_payload
from outbox.queries import queries
from outbox.relay import Relay, RelaySettings
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, interaction_event, signal_event
from tests.bench.database import RESET_SQL, create_bench_database, database_server, server_version
from tests.helpers import fetch, scalar
from tests.pg import drop_database

INSERT_ROWS = 1000
POLL_S = 0.01
# A drain that outlives this is reported as such, not waited for.
DRAIN_TIMEOUT_S = 120.0
UNDELIVERED_SQL = "select count(*) from eco_outbox.events where state <> 'delivered'"
HELD_SQL = "select count(*) from eco_outbox.events where last_error = 'parent_pending'"


def backlog(interactions: int, signals: int) -> list[object]:
    now = datetime.now(UTC)
    events: list[object] = []
    for _ in range(interactions):
        iid = uuid.uuid4()
        events.append(interaction_event(InteractionRow(id=iid, created_at=now)))
        events.extend(signal_event(iid, f"s{n}", {"n": n}) for n in range(signals))
    return events


async def seed(pool: aiopg.Pool, events: list[object]) -> None:
    """In intake's order, through intake's statement (seq follows the list)."""
    insert = queries(OUTBOX_NAMES)["insert_events"]
    for start in range(0, len(events), INSERT_ROWS):
        chunk = events[start : start + INSERT_ROWS]
        params = dict(
            kinds=[str(e.kind) for e in chunk],  # type: ignore[attr-defined]
            keys=[str(e.key) for e in chunk],  # type: ignore[attr-defined]
            group_keys=[str(e.group_key) for e in chunk],  # type: ignore[attr-defined]
            payloads=[encode_payload(e.payload) for e in chunk],  # type: ignore[attr-defined]
            dedupe_keys=[None for _ in chunk],
        )
        await fetch(pool, insert.sql, params)
    await fetch(pool, "ANALYZE eco_outbox.events")


async def drain_once(dsn: str, interactions: int, signals: int) -> tuple[float, int]:
    """Seconds until every row is delivered; how many were held for a pending parent on the way."""
    pool = await aiopg.create_pool(dsn, minsize=0, maxsize=10, enable_hstore=False)
    try:
        await fetch(pool, RESET_SQL)
        await seed(pool, backlog(interactions, signals))
        relay = Relay(pool, pool, ECO_TARGET, RelaySettings(), names=OUTBOX_NAMES)
        held = 0
        started = time.monotonic()
        relay.start()
        try:
            while await scalar(pool, UNDELIVERED_SQL) > 0:
                held = max(held, await scalar(pool, HELD_SQL))
                if time.monotonic() - started > DRAIN_TIMEOUT_S:
                    break
                await asyncio.sleep(POLL_S)
            elapsed = time.monotonic() - started
        finally:
            await relay.stop()
        return elapsed, held
    finally:
        pool.close()
        await pool.wait_closed()


async def main(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="eco-drain-") as scratch,
        database_server(Path(scratch)) as (
            server,
            origin,
        ),
    ):
        dsn = await create_bench_database(server)
        try:
            print(
                f"drain: {args.interactions} interactions x {args.signals} signals, default relay settings,"
                f" PostgreSQL {server_version(server)} ({origin}), load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            times: list[float] = []
            for run in range(1, args.runs + 1):
                elapsed, held = await drain_once(dsn, args.interactions, args.signals)
                times.append(elapsed)
                print(f"run {run:2d}: {elapsed:6.2f} s  (held parent_pending at once: {held})", flush=True)
        finally:
            drop_database(dsn)
    median = statistics.median(times)
    worst = max(times)
    ok = worst <= args.limit * median
    print(
        f"median {median:.2f} s, min {min(times):.2f} s, max {worst:.2f} s, max/median {worst / median:.2f}"
        f" (limit {args.limit:g}): {'PASS' if ok else 'FAIL'}; load {os.getloadavg()[0]:.2f}"
    )
    return 0 if ok else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.drain", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--interactions", type=int, default=1500)
    parser.add_argument("--signals", type=int, default=9, help="signals per interaction")
    parser.add_argument("--limit", type=float, default=3.0, help="worst drain, in medians")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
