"""How long and how hard each bench stage runs: the full run, and `--quick` for a smoke run."""

from __future__ import annotations

from dataclasses import dataclass

LAGS_S = (0.0, 0.1, 0.5, 2.0, 10.0)


@dataclass(frozen=True)
class BenchSettings:
    # Intake: wrk with this many threads and keep-alive connections, each with one request in flight; every
    # server is measured `repeats` times, the servers taking turns, and the median run is reported.
    wrk_threads: int = 2
    connections: int = 64
    intake_s: float = 8.0
    repeats: int = 3
    # A bound on the count as well as on the time of every Python load run.
    max_requests: int = 1_000_000
    backlog: int = 100_000
    e2e_s: float = 10.0
    e2e_rate_per_s: float = 5000.0
    asks: int = 500
    # Concurrent ask-eco streams, and the offline responder's pause before each chunk while they run.
    streams: int = 2000
    stream_cadence_ms: float = 100.0
    lag_signals: int = 100
    lags_s: tuple[float, ...] = LAGS_S


QUICK = BenchSettings(
    intake_s=2.0,
    repeats=1,
    backlog=10_000,
    e2e_s=2.0,
    e2e_rate_per_s=1000.0,
    asks=40,
    streams=200,
    lag_signals=10,
)
