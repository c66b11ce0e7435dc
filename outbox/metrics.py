"""Prometheus metrics of the outbox, registered once per process in the default registry."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from outbox.errors import Failure
from outbox.target import Target

RELAY_DELIVERED = Counter("eco_outbox_delivered", "Outbox rows written to the target.", ["kind"])
RELAY_RETRIED = Counter(
    "eco_outbox_retried", "Outbox rows held back for a later attempt, by reason.", ["kind", "reason"]
)
RELAY_DEAD = Counter(
    "eco_outbox_dead_lettered", "Outbox rows moved to the dead-letter state.", ["kind", "reason"]
)
RELAY_OUTAGES = Counter(
    "eco_outbox_relay_outages", "Relay batches abandoned because a database was unreachable."
)
RELAY_BATCH_ROWS = Histogram(
    "eco_outbox_relay_batch_rows",
    "Rows claimed per relay batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
RELAY_BATCH_SECONDS = Histogram(
    "eco_outbox_relay_batch_seconds",
    "Time to claim, deliver and mark one relay batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
# Set at each scrape; with several processes the lowest wins: one stopped relay is enough to alert on.
RELAY_RUNNING = Gauge(
    "eco_outbox_relay_running",
    "1 when every relay loop of the process runs, else 0.",
    multiprocess_mode="livemin",
)
RELAY_BATCH_FAILURES = Counter(
    "eco_outbox_relay_batch_failures",
    "Relay batches that failed as a whole, by class (outage, not_ready); no row was charged for them.",
    ["failure"],
)
RELAY_REFUSED = Counter(
    "eco_outbox_refused_rows",
    "Rows the target refused (isolated from their batch and charged an attempt), by SQLSTATE.",
    ["kind", "sqlstate"],
)
LOOP_RESTARTS = Counter("eco_outbox_loop_restarts", "Outbox loops restarted after they died.", ["loop"])
DEFERRED_ROWS = Gauge(
    "eco_outbox_deferred_rows",
    "Rows held in memory because the outbox was unreachable, waiting for a retry.",
    multiprocess_mode="livesum",
)
DEFERRED_DROPPED = Counter(
    "eco_outbox_deferred_dropped",
    "Held rows lost: dropped when the bounded queue was full, or still held when the process stopped.",
)


def zero_series(target: Target, wait_reasons: Iterable[str]) -> None:
    """Create every labelled series whose labels are known at start, at 0: prometheus-client exports a
    labelled metric only once `.labels()` is called, and a dashboard or `rate()` over it shows nothing.
    The kinds are the target's; a child kind is retried or dead-lettered for the reasons it waits on."""
    reasons = tuple(wait_reasons)
    for kind in target.order:
        RELAY_DELIVERED.labels(kind=kind)
    for kind in target.child_kinds:
        for reason in reasons:
            RELAY_RETRIED.labels(kind=kind, reason=reason)
            RELAY_DEAD.labels(kind=kind, reason=reason)
    for failure in Failure:
        RELAY_BATCH_FAILURES.labels(failure=failure)
