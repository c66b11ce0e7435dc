"""`python -m tests.bench.cpu intake|batches`: where the CPU goes, read from /proc (not sampled), so that
what limits a figure is a count of CPU seconds rather than a guess.

- `intake`: one wrk run (the bench's intake load) against the one-INSERT handler, the service (its relay
  delivering) and the service as an intake-only node (`ECO_RELAY_LOOPS=0`, nothing delivered), taking turns
  for `--rounds` rounds. For each: req/s, then the CPU microseconds per request of each part: the HTTP
  process, the relay process, the PostgreSQL backends serving each (matched by their client ports), wrk,
  PostgreSQL's own processes (WAL writer, autovacuum, ...). On two cores the parts share ~2,000,000 us a
  second, so a part's cost per request is what it takes from everyone's throughput.
- `batches`: the service's `Relay`, in this process, delivering one batch of n pending signals at a time,
  n from one to a full batch: the PostgreSQL backends' CPU and this process's CPU per batch and per row, so
  that a batch's fixed cost and each row's own cost can be read apart.

`DATABASE_URL`'s server, or an embedded one, as `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiopg

from outbox.relay import Relay
from service.config import Config
from service.runtime.logs import setup_logging
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from tests.bench import database, processes, stages
from tests.bench.settings import BenchSettings
from tests.helpers import scalar
from tests.pg import drop_database
from tests.service_process import ServiceProcess

# A backend's process title: "postgres: [cluster: ]user database host(port) state", or "[local]" for a
# client on a Unix socket (the embedded server's), whose backends are then not told apart by client.
BACKEND_TITLE = re.compile(r"^postgres: (?:\S+: )?\S+ (?P<db>\S+) (?:\[local\]|[\d.:a-f]+\((?P<port>\d+)\))")
OVER_A_UNIX_SOCKET = "clients on a Unix socket"
BATCH_SIZES = (1, 10, 33, 100, 300, 1000)
# Rows delivered per batch size: enough batches that one batch's noise weighs little.
ROWS_PER_SIZE = 3000


def cpu_s(pid: int) -> float:
    """CPU seconds so far of process `pid`'s threads, from their schedstat (nanoseconds on a CPU): the 10 ms
    ticks of /proc/<pid>/stat would round a batch of a few milliseconds to nothing or to a whole tick."""
    return (
        sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir())
        / 1e9
    )


def postgres_processes() -> dict[int, str]:
    """pid -> process title of every PostgreSQL process on this machine."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if title.startswith("postgres:"):
            found[int(cmdline.parent.name)] = title
    return found


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def backends(dbname: str) -> dict[int, tuple[int | None, float]]:
    """pid -> (client port, None on a Unix socket; CPU seconds so far) of each backend of `dbname`."""
    found = {}
    for pid, title in postgres_processes().items():
        backend = BACKEND_TITLE.match(title)
        if backend is not None and backend["db"] == dbname:
            with contextlib.suppress(FileNotFoundError):
                found[pid] = (int(backend["port"]) if backend["port"] else None, cpu_s(pid))
    return found


def own_processes_s() -> float:
    """CPU seconds so far of PostgreSQL's processes that serve no client (WAL writer, autovacuum, ...)."""
    total = 0.0
    for pid, title in postgres_processes().items():
        if BACKEND_TITLE.match(title) is None:
            with contextlib.suppress(FileNotFoundError):
                total += cpu_s(pid)
    return total


def children_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def current_database(pool: aiopg.Pool) -> str:
    return str(await scalar(pool, "SELECT current_database()"))


async def intake_run(
    pool: aiopg.Pool, server: Callable[[], ServiceProcess], service: bool, settings: BenchSettings
) -> tuple[float, dict[str, float]]:
    """req/s and CPU us per request of each part, over one wrk run."""
    await database.reset(pool)
    parents = await database.insert_parents(pool, stages.PARENTS)
    dbname = await current_database(pool)
    async with server() as running:
        assert running.process is not None
        parts = {running.process.pid: "one-INSERT handler"}
        if service:
            http, relay = await running.pids()
            parts = {http: "HTTP process"} | ({relay: "relay process"} if relay is not None else {})
        before = {pid: cpu_s(pid) for pid in parts}
        backends_before, own_before, wrk_before = backends(dbname), own_processes_s(), children_s()
        load = await stages.intake_load(running.url, parents, settings)
        used: Counter[str] = Counter({parts[pid]: cpu_s(pid) - before[pid] for pid in parts})
        used["wrk"] = children_s() - wrk_before
        used["postgres: own processes"] = own_processes_s() - own_before
        part_of_port: dict[int | None, str] = {
            port: part for pid, part in parts.items() for port in local_ports(pid)
        }
        part_of_port[None] = OVER_A_UNIX_SOCKET
        for pid, (port, seconds) in backends(dbname).items():
            part = part_of_port.get(port, "the bench")
            used[f"postgres: backends of {part}"] += seconds - backends_before.get(pid, (port, 0.0))[1]
    return load.per_s, {part: seconds / load.requests * 1e6 for part, seconds in used.items()}


async def intake(pool: aiopg.Pool, dsn: str, scratch: Path, rounds: int) -> None:
    settings = BenchSettings()
    servers: dict[str, tuple[Callable[[], ServiceProcess], bool]] = {
        "one INSERT per request": (lambda: processes.plain(dsn, scratch), False),
        "eco-outbox, relay delivering": (lambda: processes.service(dsn, scratch), True),
        "eco-outbox, intake only (ECO_RELAY_LOOPS=0)": (
            lambda: processes.service(dsn, scratch, ECO_RELAY_LOOPS="0"),
            True,
        ),
    }
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, (server, service) in servers.items():
            runs[name].append(await intake_run(pool, server, service, settings))
    for name, results in runs.items():
        rates = [rate for rate, _ in results]
        parts = sorted({part for _, used in results for part in used})
        medians = {part: statistics.median(used.get(part, 0.0) for _, used in results) for part in parts}
        print(
            f"{name}: {statistics.median(rates):,.0f} req/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
        )
        for part, us in sorted(medians.items(), key=lambda item: -item[1]):
            print(f"  {us:7.1f} us/request  {part}")
        print(f"  {sum(medians.values()):7.1f} us/request  in all")


async def batches(pool: aiopg.Pool, dsn: str, sizes: list[int], rows: int) -> None:
    """One batch at a time, seeded by a connection of its own whose backend is left out of the count."""
    await database.reset(pool)
    parents = await database.insert_parents(pool, stages.PARENTS)
    dbname = await current_database(pool)
    config = Config.from_env()
    seeder = await aiopg.create_pool(dsn, minsize=1, maxsize=1, enable_hstore=False)
    outbox = await aiopg.create_pool(dsn, minsize=0, maxsize=4, enable_hstore=False)
    target = await aiopg.create_pool(dsn, minsize=0, maxsize=4, enable_hstore=False)
    relay = Relay(outbox, target, ECO_TARGET, config.relay, names=OUTBOX_NAMES)
    seeding_backend = int(await scalar(seeder, "SELECT pg_backend_pid()"))  # type: ignore[arg-type]
    print("rows per batch | PostgreSQL: ms per batch (us per row) | the relay's Python: ms (us per row)")
    try:
        for size in sizes:
            count = max(3, rows // size)
            postgres_s = python_s = 0.0
            for _ in range(count):
                await database.seed_backlog(seeder, parents, size)
                before, python_before = backends(dbname), time.process_time()
                outcome = await relay.run_once()
                python_s += time.process_time() - python_before
                for pid, (port, seconds) in backends(dbname).items():
                    if pid != seeding_backend:
                        postgres_s += seconds - before.get(pid, (port, 0.0))[1]
                assert outcome.delivered == size, outcome
            print(
                f"{size:14,} | {postgres_s / count * 1000:8.2f} ({postgres_s / count / size * 1e6:6.1f})"
                f"{'':18} | {python_s / count * 1000:8.2f} ({python_s / count / size * 1e6:6.1f})"
            )
    finally:
        for each in (seeder, outbox, target):
            each.close()
            await each.wait_closed()


async def run(what: str, server: str, scratch: Path, args: argparse.Namespace) -> None:
    dsn = await database.create_bench_database(server)
    pool = await aiopg.create_pool(dsn, minsize=0, maxsize=4, enable_hstore=False)
    try:
        if what == "intake":
            await intake(pool, dsn, scratch, args.rounds)
        else:
            await batches(pool, dsn, args.sizes, args.rows)
    finally:
        pool.close()
        await pool.wait_closed()
        drop_database(dsn)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("intake", "batches"))
    parser.add_argument("--rounds", type=int, default=3, help="intake: rounds of the three servers (3)")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        default=list(BATCH_SIZES),
        help=f"batches: rows per batch, comma-separated ({','.join(map(str, BATCH_SIZES))})",
    )
    parser.add_argument(
        "--rows", type=int, default=ROWS_PER_SIZE, help=f"batches: rows per size ({ROWS_PER_SIZE:,})"
    )
    args = parser.parse_args(argv)
    # `batches` runs the relay in this process: its logs at the level the service would use in production.
    setup_logging(json_lines=False, level="WARNING")
    scratch = Path(tempfile.mkdtemp(prefix="eco-cpu-"))
    try:
        with database.database_server(scratch) as (server, _):
            asyncio.run(run(args.what, server, scratch, args))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
