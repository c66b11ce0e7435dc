"""How long and how hard each bench stage runs: the full run, and `--quick` for a smoke run."""

from __future__ import annotations

from dataclasses import dataclass

LAGS_S = (0.0, 0.1, 0.5, 2.0, 10.0)


@dataclass(frozen=True)
class BenchSettings:
    # Closed-loop intake: this many keep-alive connections, each with one request in flight.
    connections: int = 64
    intake_s: float = 10.0
    warmup_s: float = 2.0
    # A bound on the count as well as on the time of every load run.
    max_requests: int = 1_000_000
    workers: int = 2
    backlog: int = 100_000
    e2e_s: float = 10.0
    e2e_rate_per_s: float = 1000.0
    asks: int = 500
    lag_signals: int = 100
    lags_s: tuple[float, ...] = LAGS_S


QUICK = BenchSettings(intake_s=2.0, warmup_s=0.5, backlog=10_000, e2e_s=2.0, asks=40, lag_signals=10)
