"""`python -m tests.bench.profile intake|relay|streams`: where one service process spends its time under one
of the bench's loads, sampled with py-spy (`pip install -e .[bench]`; sampling another process needs root or
ptrace rights). Prints the share of samples in each part of the process, by the service's own file that
asked for the work, and by file (self time).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiopg

from tests.bench import database, processes
from tests.bench.settings import BenchSettings
from tests.bench.stages import INTAKE_ROWS_SQL, PARENTS, STREAMS_TIMEOUT_S
from tests.bench.wrk import run_wrk
from tests.helpers import scalar, wait_for
from tests.pg import drop_database
from tests.service_process import ServiceProcess

SAMPLES_PER_S = 250
# Signals in the relay's backlog: a few seconds of draining, so that start and end weigh little.
RELAY_BACKLOG = 300_000
RELAY_TIMEOUT_S = 120.0
TOP_FILES = 25
# A sample belongs to the part of its deepest frame that matches one of these (by file), else to "other":
# the time of a middleware is what it does itself, not the handler it awaits.
PARTS = {
    "event loop: waiting (epoll)": r"^selectors\.py",
    "event loop: callbacks and transports": r"asyncio/",
    "aiohttp: HTTP parsing, routing, writing": r"aiohttp/|aiohttp_cors/|multidict/|yarl/",
    "metrics middleware and prometheus-client": r"service/http/metrics\.py|prometheus_client/",
    "error and rate-limit middlewares": r"service/http/(middleware|ratelimit)\.py",
    "views, schemas, payloads": r"service/http/views/|service/chat/schemas\.py"
    r"|service/http/(api_schemas|payload|signal_fast_path)\.py|marshmallow/",
    "json encode and decode": r"^json/",
    "uuid": r"^uuid\.py",
    "outbox events (building rows)": r"outbox/events\.py|service/target/rows\.py",
    "outbox writer (group commit)": r"outbox/enqueue\.py",
    "relay": r"outbox/(relay|sqlutil|wakeup)\.py|service/target/delivery\.py",
    "aiopg and psycopg2": r"aiopg/|psycopg2/",
    "loguru": r"loguru/",
    "SSE streams (aiohttp-sse, interaction, responder)": r"aiohttp_sse/|service/(interaction|responder)\.py",
}
# The service's own files, less the ones every sample passes through (the entry points, run_app).
OWN_CODE = r"(service|outbox)/(?!server\.py|__main__\.py|processes\.py)"
# A supervised process's thread that only checks on its supervisor, asleep nearly always: not the service.
WATCHER_FRAME = "_stop_when_orphaned"
FRAME_FILE = re.compile(r"\(([^()]*?):\d+\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return re.sub(r"^\.\d+/|^wt-\d+/", "", path)


def _part(frames: list[str]) -> str:
    for frame in reversed(frames):
        where = FRAME_FILE.search(frame)
        for part, pattern in PARTS.items():
            if where and re.search(pattern, where.group(1)):
                return part
    return "other"


def _owner(frames: list[str]) -> str:
    """The service's own file closest to the leaf: who asked for the library's or the loop's work."""
    for frame in reversed(frames):
        where = FRAME_FILE.search(frame)
        if where and re.match(OWN_CODE, where.group(1)):
            return where.group(1)
    return "(no service frame: the event loop, aiohttp before the handler)"


def summarise(raw: str) -> str:
    """py-spy's raw output (`frame;frame;... count` per line, leaf last) as two shares tables."""
    by_file: Counter[str] = Counter()
    by_part: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or WATCHER_FRAME in stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = FRAME_FILE.search(frames[-1])
        by_file[_short(leaf.group(1)) if leaf else frames[-1]] += count
        by_part[_part(frames)] += count
        by_owner[_owner(frames)] += count
    lines = [f"{total} samples", "", "by part (each sample in its deepest frame's part):"]
    lines += [f"  {count / total:6.1%}  {part}" for part, count in by_part.most_common()]
    lines += ["", "by the service's file closest to the leaf (libraries' work charged to their caller):"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in by_owner.most_common(TOP_FILES)]
    lines += ["", "self time, by file:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in by_file.most_common(TOP_FILES)]
    return "\n".join(lines)


async def sampled(pid: int, out: Path, load: Callable[[], Awaitable[None]]) -> str:
    """Run `load` while py-spy samples process `pid` (idle samples too: the loop's wait is a share)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed: pip install -e .[bench]")
    process = await asyncio.create_subprocess_exec(
        spy,
        "record",
        "--idle",
        "--format",
        "raw",
        f"--rate={SAMPLES_PER_S}",
        "--pid",
        str(pid),
        "-o",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await load()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await process.communicate()
    try:
        return await asyncio.to_thread(out.read_text)
    except FileNotFoundError:
        raise RuntimeError(f"py-spy wrote nothing: {err.decode()[-2000:]}") from None


async def profile(what: str, seconds: float, server: str, scratch: Path) -> str:
    settings = BenchSettings()
    dsn = await database.create_bench_database(server)
    pool = await aiopg.create_pool(dsn, minsize=0, maxsize=4, enable_hstore=False)
    try:
        await database.reset(pool)
        parents = await database.insert_parents(pool, PARENTS)
        service: ServiceProcess = processes.service(dsn, scratch)
        async with service:
            assert service.process is not None

            async def intake() -> None:
                await run_wrk(
                    service.url, parents, threads=2, connections=settings.connections, duration_s=seconds
                )

            async def relay() -> None:
                await database.seed_backlog(pool, parents, RELAY_BACKLOG)
                await wait_for(
                    lambda: scalar(pool, INTAKE_ROWS_SQL.replace("bench_view", "bench_backlog")),
                    lambda rows: rows == RELAY_BACKLOG,
                    timeout_s=RELAY_TIMEOUT_S,
                    interval_s=0.05,
                )

            async def streams() -> None:
                spec = {
                    "mode": "streams",
                    "port": service.port,
                    "connections": settings.streams,
                    "duration_s": STREAMS_TIMEOUT_S,
                    "max_requests": settings.streams,
                }
                await processes.loadgen(spec, STREAMS_TIMEOUT_S + 30)

            loads = {"intake": intake, "relay": relay, "streams": streams}
            # The process that does the work: the relay process for the relay's load, else the HTTP one.
            http, relay_process = await service.pids()
            pid = relay_process if what == "relay" and relay_process is not None else http
            raw = await sampled(pid, scratch / "profile.txt", loads[what])
    finally:
        pool.close()
        await pool.wait_closed()
        drop_database(dsn)
    return summarise(raw)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__)
    parser.add_argument("load", choices=("intake", "relay", "streams"))
    parser.add_argument("--seconds", type=float, default=8.0, help="intake: seconds of wrk load (8)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="eco-profile-"))
    try:
        with database.database_server(scratch) as (server, _):
            print(asyncio.run(profile(args.load, args.seconds, server, scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
