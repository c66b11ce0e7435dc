"""The bench's measurements, one function each, all on the same database (emptied before each one)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import aiopg
import psycopg2.errors

from outbox.relay import Relay
from service.config import Config
from service.store.database import create_pool
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from tests.bench import database, processes
from tests.bench.loadgen import median, percentile
from tests.bench.settings import BenchSettings
from tests.bench.timed import TimedPool, Timings
from tests.bench.wrk import WrkRun, run_wrk
from tests.helpers import fetch, scalar, wait_for
from tests.service_process import ServiceProcess

# The seed strategy of the ECO backend: an insert, and two more after these waits on an FK violation.
SEED_RETRY_WAITS_S = (0.05, 0.1)
SEED_INSERT_SQL = """
INSERT INTO analytics.eco_passive_signals (id, interaction_id, signal, meta)
VALUES (%(id)s, %(interaction_id)s, 'bench_seed', '{}'::jsonb)
"""
SEED_VOTE_SQL = """
INSERT INTO analytics.eco_feedback (interaction_id, vote, source)
VALUES (%(interaction_id)s, 'up', 'bench_seed')
"""
# The end-to-end stage's open loop spreads its requests over this many connections (a request waits for
# the previous one on its connection, so at 5k/s each connection has ~13 ms for each).
E2E_CONNECTIONS = 64
# Interactions the intake and end-to-end stages spread their signals over.
PARENTS = 100
# Longest the end-to-end and lag stages wait for the last rows, beyond the load itself.
SETTLE_TIMEOUT_S = 60.0
# The streams stage: its longest run, and how often it samples the service's memory meanwhile.
STREAMS_TIMEOUT_S = 120.0
RSS_SAMPLE_S = 0.02
# The intake stages' signals, as the Lua script names them.
INTAKE_ROWS_SQL = "SELECT count(*) FROM analytics.eco_passive_signals WHERE signal = 'bench_view'"


@dataclass(frozen=True)
class IntakeRun:
    load: WrkRun
    # Signals in the target once the run (and the relay) settled; None for the ceiling, which stores nothing.
    delivered: int | None


@dataclass
class Intake:
    """One server's wrk runs; the figures are the median run's (by req/s)."""

    runs: list[IntakeRun] = field(default_factory=list)

    @property
    def median(self) -> WrkRun:
        ordered = sorted((run.load for run in self.runs), key=lambda load: load.per_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def acked(self) -> int:
        return sum(run.load.acked for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.load.non_2xx + run.load.socket_errors for run in self.runs)

    @property
    def delivered(self) -> int | None:
        counts = [run.delivered for run in self.runs]
        return None if None in counts else sum(count or 0 for count in counts)

    def all_delivered(self, connections: int) -> bool:
        """Every 202 is a row in the target; at most one more per connection (a request wrk sent before it
        stopped, whose answer it never read, is stored all the same)."""
        return all(
            run.delivered is not None and run.load.acked <= run.delivered <= run.load.acked + connections
            for run in self.runs
        )


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int
    missing: int = 0


@dataclass
class RelayRun:
    rows: int
    seconds: float
    delivered: int
    loops: int
    batch_size: int
    # Each statement's time per batch, on the outbox and on the target.
    timings: Timings = field(default_factory=Timings)

    @property
    def per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class LagRun:
    signals: int
    lost_seed: dict[float, int] = field(default_factory=dict)
    lost_outbox: dict[float, int] = field(default_factory=dict)
    # Votes: the old backend's feedback (look the interaction up once, 404 if absent) against the outbox.
    lost_votes_seed: dict[float, int] = field(default_factory=dict)
    lost_votes_outbox: dict[float, int] = field(default_factory=dict)
    seconds: float = 0.0


async def _delivered(pool: aiopg.Pool) -> int:
    """Once nothing is pending in the outbox (the service's relay delivered every signal; the one-INSERT
    handler has no outbox): the signals in the target."""
    await wait_for(
        lambda: scalar(pool, "SELECT count(*) FROM eco_outbox.events WHERE state = 'pending'"),
        lambda pending: pending == 0,
        timeout_s=SETTLE_TIMEOUT_S,
        interval_s=0.05,
    )
    return int(await scalar(pool, INTAKE_ROWS_SQL))


async def _delivered_interactions(pool: aiopg.Pool) -> int:
    """Once nothing is pending in the outbox: the interactions (each ask-eco request's row) in the target."""
    await wait_for(
        lambda: scalar(pool, "SELECT count(*) FROM eco_outbox.events WHERE state = 'pending'"),
        lambda pending: pending == 0,
        timeout_s=SETTLE_TIMEOUT_S,
        interval_s=0.05,
    )
    return int(await scalar(pool, "SELECT count(*) FROM analytics.eco_interactions"))


async def intake_load(url: str, parents: list[str], settings: BenchSettings) -> WrkRun:
    """The intake stages' load: wrk with the settings' threads, connections and duration."""
    return await run_wrk(
        url,
        parents,
        threads=settings.wrk_threads,
        connections=settings.connections,
        duration_s=settings.intake_s,
    )


async def intake_side_by_side(
    pool: aiopg.Pool, dsn: str, log_dir: Path, settings: BenchSettings
) -> dict[str, Intake]:
    """wrk against the HTTP ceiling, the one-INSERT handler and this service (its relay delivering), taking
    turns `repeats` times on the same database, emptied before each run; after each run, the rows are
    counted in the target."""
    servers = {
        "ceiling": lambda: processes.ceiling(log_dir),
        "one_insert": lambda: processes.plain(dsn, log_dir),
        "service": lambda: processes.service(dsn, log_dir),
    }
    results = {name: Intake() for name in servers}
    for _ in range(settings.repeats):
        for name, server in servers.items():
            await database.reset(pool)
            parents = await database.insert_parents(pool, PARENTS)
            async with server() as running:
                load = await intake_load(running.url, parents, settings)
                delivered = None if name == "ceiling" else await _delivered(pool)
            results[name].runs.append(IntakeRun(load, delivered))
    return results


# The drains, by the kind of their backlog: what the target counts as delivered, and how many parents the
# backlog's rows spread over (signals and module usages over 1,000 interactions, votes two per interaction,
# as the app gives them).
DRAIN_DELIVERED_SQL = {
    "signal": "SELECT count(*) FROM analytics.eco_passive_signals",
    "module_usage": "SELECT count(*) FROM analytics.eco_module_usages",
    "feedback": "SELECT count(*) FROM analytics.eco_feedback",
}
DRAIN_PARENTS = {"signal": 1000, "module_usage": 1000}
VOTES_PER_PARENT = 2


async def relay(pool: aiopg.Pool, dsn: str, settings: BenchSettings, kind: str = "signal") -> RelayRun:
    """Drain a backlog of one child kind whose parents exist, with the service's relay and its configured
    settings, in this process (nothing else runs meanwhile); every statement it runs is timed."""
    await database.reset(pool)
    count = DRAIN_PARENTS.get(kind, max(1, settings.backlog // VOTES_PER_PARENT))
    parents = await database.insert_parents(pool, count)
    await database.seed_backlog(pool, parents, settings.backlog, kind)
    config = Config.from_env()
    outbox = await create_pool(dsn, config)
    target = await create_pool(dsn, config)
    timings = Timings()
    worker = Relay(
        TimedPool(outbox, "outbox", timings),  # type: ignore[arg-type]
        TimedPool(target, "target", timings),  # type: ignore[arg-type]
        ECO_TARGET,
        replace(config.relay, poll_s=0.05),
        names=OUTBOX_NAMES,
    )
    started = time.perf_counter()
    worker.start()
    try:
        deadline = started + SETTLE_TIMEOUT_S * 5
        while time.perf_counter() < deadline:
            if not await scalar(
                pool,
                "SELECT EXISTS (SELECT 1 FROM eco_outbox.events WHERE state = 'pending')",
            ):
                break
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
    finally:
        await worker.stop()
        for each in (outbox, target):
            each.close()
            await each.wait_closed()
    delivered = int(await scalar(pool, DRAIN_DELIVERED_SQL[kind]))  # type: ignore[arg-type]
    loops, batch_size = config.relay.loops, config.relay.batch_size
    return RelayRun(settings.backlog, seconds, delivered, loops, batch_size, timings)


async def end_to_end(pool: aiopg.Pool, server: ServiceProcess, settings: BenchSettings) -> Latency:
    """Signals at a steady rate; from each 202 to its row's commit in the target."""
    await database.reset(pool)
    parents = await database.insert_parents(pool, PARENTS)
    await fetch(pool, database.VISIBILITY_SQL)
    try:
        spec = {
            "mode": "rate",
            "port": server.port,
            "connections": E2E_CONNECTIONS,
            "duration_s": settings.e2e_s,
            "rate_per_s": settings.e2e_rate_per_s,
            "max_requests": settings.max_requests,
            "interaction_ids": parents,
        }
        result = await processes.loadgen(spec, settings.e2e_s + 60)
        acked = {signal_id: at for signal_id, at in result["acked"]}
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        visible: dict[str, float] = {}
        while time.monotonic() < deadline:
            rows = await fetch(
                pool, "SELECT id::text, extract(epoch FROM at)::float8 FROM public.bench_visible"
            )
            visible = {str(signal_id): float(at) for signal_id, at in rows}  # type: ignore[arg-type]
            if all(signal_id in visible for signal_id in acked):
                break
            await asyncio.sleep(0.2)
    finally:
        await fetch(pool, database.DROP_VISIBILITY_SQL)
    latencies = [(visible[key] - at) * 1000 for key, at in acked.items() if key in visible]
    return Latency(
        percentile(latencies, 50),
        percentile(latencies, 99),
        len(latencies),
        missing=len(acked) - len(latencies) + int(result["requests"]) - len(acked),
    )


async def prompt_ready(server: ServiceProcess, settings: BenchSettings) -> Latency:
    """Ask-eco streams, a few at a time: from the request to the `prompt_ready` event."""
    spec = {
        "mode": "ask",
        "port": server.port,
        "connections": 4,
        "duration_s": 120.0,
        "max_requests": settings.asks,
    }
    result = await processes.loadgen(spec, 180)
    latencies = list(result["latencies_ms"])
    return Latency(
        median(latencies), percentile(latencies, 99), len(latencies), settings.asks - len(latencies)
    )


@dataclass
class StreamsRun:
    streams: int
    completed: int
    peak_open: int
    # Interactions in the target once the outbox has nothing pending: one per completed stream.
    delivered: int
    cadence_ms: float
    p50_gap_ms: float
    p99_gap_ms: float
    memory_per_stream_bytes: float


def _rss_bytes(pid: int) -> int:
    """The process's resident memory, from /proc (Linux only, as the bench)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def streams(pool: aiopg.Pool, log_dir: Path, dsn: str, settings: BenchSettings) -> StreamsRun:
    """`streams` ask-eco streams at once on one service process, its offline responder pausing
    `stream_cadence_ms` before each chunk: do they all complete, how late do chunks come, and what does an
    open stream cost in resident memory (the peak while they run, less the idle process's)."""
    await database.reset(pool)
    server = processes.service(
        dsn, log_dir, name="service-streams", ECO_OFFLINE_CHUNK_DELAY_MS=f"{settings.stream_cadence_ms:g}"
    )
    async with server:
        pid, _ = await server.pids()
        idle = _rss_bytes(pid)
        spec = {
            "mode": "streams",
            "port": server.port,
            "connections": settings.streams,
            "duration_s": STREAMS_TIMEOUT_S,
            "max_requests": settings.streams,
        }
        load = asyncio.create_task(processes.loadgen(spec, STREAMS_TIMEOUT_S + 30))
        peak = idle
        while not load.done():
            peak = max(peak, _rss_bytes(pid))
            await asyncio.wait([load], timeout=RSS_SAMPLE_S)
        result = await load
        delivered = await _delivered_interactions(pool)
    gaps = list(result["gaps_ms"])
    return StreamsRun(
        streams=settings.streams,
        completed=int(result["statuses"]["completed"]),
        peak_open=int(result["peak_open"]),
        delivered=delivered,
        cadence_ms=settings.stream_cadence_ms,
        p50_gap_ms=percentile(gaps, 50),
        p99_gap_ms=percentile(gaps, 99),
        memory_per_stream_bytes=(peak - idle) / settings.streams,
    )


async def _seed_insert(pool: aiopg.Pool, interaction_id: str) -> bool:
    """The old fix: insert straight into the target; on FK violation wait 50 ms, then 100 ms; give up."""
    row = {"id": str(uuid.uuid4()), "interaction_id": interaction_id}
    for wait_s in (*SEED_RETRY_WAITS_S, None):
        try:
            await fetch(pool, SEED_INSERT_SQL, row)
            return True
        except psycopg2.errors.ForeignKeyViolation:
            if wait_s is None:
                return False
            await asyncio.sleep(wait_s)
    return False


async def _seed_vote(pool: aiopg.Pool, interaction_id: str) -> bool:
    """The old backend's feedback: look the interaction up once; absent, answer 404 (the vote is lost)."""
    if not await scalar(pool, "SELECT 1 FROM analytics.eco_interactions WHERE id = %s", (interaction_id,)):
        return False
    await fetch(pool, SEED_VOTE_SQL, {"interaction_id": interaction_id})
    return True


async def _outbox_vote(session: aiohttp.ClientSession, url: str, interaction_id: str) -> bool:
    body = {"interaction_id": interaction_id, "vote": "up", "source": "bench_outbox"}
    async with session.post(f"{url}/api/feedback", json=body) as response:
        return response.status == 204


async def _outbox_post(session: aiohttp.ClientSession, url: str, interaction_id: str) -> str | None:
    body = {"interaction_id": interaction_id, "name": "bench_outbox"}
    async with session.post(f"{url}/api/signal", json=body) as response:
        return (await response.json())["id"] if response.status == 202 else None


async def lag(pool: aiopg.Pool, server: ServiceProcess, settings: BenchSettings) -> LagRun:
    """For each parent lag, `lag_signals` interactions whose row reaches the target that long after the
    client sent its signal and its vote: the seed strategy's direct insert (for the vote, the old backend's
    look-up, 404 when absent) against a POST to the outbox. All lags run at once; a signal or vote is lost
    when it is not in the target once everything settled (or dead-lettered)."""
    await database.reset(pool)
    run = LagRun(settings.lag_signals)
    groups = {lag_s: [str(uuid.uuid4()) for _ in range(settings.lag_signals)] for lag_s in settings.lags_s}
    started = time.monotonic()

    async def parents_after(lag_s: float, ids: list[str]) -> None:
        await asyncio.sleep(lag_s)
        await fetch(pool, database.INSERT_PARENTS_SQL, {"ids": ids})

    async def seed(ids: list[str]) -> int:
        return sum(not ok for ok in await asyncio.gather(*(_seed_insert(pool, i) for i in ids)))

    async def seed_votes(ids: list[str]) -> int:
        return sum(not ok for ok in await asyncio.gather(*(_seed_vote(pool, i) for i in ids)))

    async with aiohttp.ClientSession() as session:
        outbox_ids, votes_lost_seed, votes_accepted = await asyncio.gather(
            asyncio.gather(
                *(parents_after(lag_s, ids) for lag_s, ids in groups.items()),
                *(_outbox_post(session, server.url, i) for ids in groups.values() for i in ids),
                *(seed(ids) for ids in groups.values()),
            ),
            asyncio.gather(*(seed_votes(ids) for ids in groups.values())),
            asyncio.gather(*(_outbox_vote(session, server.url, i) for ids in groups.values() for i in ids)),
        )
    posted = outbox_ids[len(groups) : len(groups) + len(groups) * settings.lag_signals]
    lost_seed = outbox_ids[len(groups) + len(posted) :]
    accepted = [key for key in posted if key is not None]
    deadline = time.monotonic() + max(settings.lags_s) + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        settled = await scalar(
            pool,
            "SELECT NOT EXISTS (SELECT 1 FROM eco_outbox.events "
            "WHERE state = 'pending' AND (key = ANY(%s::uuid[]) OR kind = 'feedback'))",
            (accepted,),
        )
        if settled:
            break
        await asyncio.sleep(0.1)
    run.seconds = time.monotonic() - started
    delivered = await fetch(
        pool,
        "SELECT interaction_id::text, count(*) FROM analytics.eco_passive_signals "
        "WHERE signal = 'bench_outbox' GROUP BY 1",
    )
    per_parent = {str(parent): int(count) for parent, count in delivered}  # type: ignore[call-overload]
    voted = await fetch(
        pool,
        "SELECT interaction_id::text, count(*) FROM analytics.eco_feedback"
        " WHERE source = 'bench_outbox' GROUP BY 1",
    )
    votes_per_parent = {str(parent): int(count) for parent, count in voted}  # type: ignore[call-overload]
    assert all(votes_accepted), "every vote is acknowledged (204)"
    for (lag_s, ids), lost, lost_votes in zip(groups.items(), lost_seed, votes_lost_seed, strict=True):
        run.lost_seed[lag_s] = int(lost)
        run.lost_outbox[lag_s] = sum(1 for i in ids if per_parent.get(i, 0) == 0)
        run.lost_votes_seed[lag_s] = lost_votes
        run.lost_votes_outbox[lag_s] = sum(1 for i in ids if votes_per_parent.get(i, 0) != 1)
    return run
