"""Prometheus metrics of the outbox, named `<prefix><name>` with the prefix its user gives (OutboxNames).

prometheus-client registers a name once per process in the default registry, so there is one set of metrics
per prefix, made the first time it is asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from outbox.errors import Failure
from outbox.names import OutboxNames
from outbox.target import Target


class OutboxMetrics:
    def __init__(self, prefix: str) -> None:
        self.relay_delivered = Counter(f"{prefix}delivered", "Outbox rows written to the target.", ["kind"])
        self.relay_retried = Counter(
            f"{prefix}retried", "Outbox rows held back for a later attempt, by reason.", ["kind", "reason"]
        )
        self.relay_dead = Counter(
            f"{prefix}dead_lettered", "Outbox rows moved to the dead-letter state.", ["kind", "reason"]
        )
        self.relay_outages = Counter(
            f"{prefix}relay_outages", "Relay batches abandoned because a database was unreachable."
        )
        self.relay_batch_rows = Histogram(
            f"{prefix}relay_batch_rows",
            "Rows claimed per relay batch.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
        )
        self.relay_batch_seconds = Histogram(
            f"{prefix}relay_batch_seconds",
            "Time to claim, deliver and mark one relay batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        # Set at each scrape; with several processes the lowest wins: one stopped relay is enough to alert on.
        self.relay_running = Gauge(
            f"{prefix}relay_running",
            "1 when every relay loop of the process runs, else 0.",
            multiprocess_mode="livemin",
        )
        self.relay_batch_failures = Counter(
            f"{prefix}relay_batch_failures",
            "Relay batches that failed as a whole, by class (outage, not_ready); no row was charged for"
            " them.",
            ["failure"],
        )
        self.relay_refused = Counter(
            f"{prefix}refused_rows",
            "Rows the target refused (isolated from their batch and charged an attempt), by SQLSTATE.",
            ["kind", "sqlstate"],
        )
        self.loop_restarts = Counter(
            f"{prefix}loop_restarts", "Outbox loops restarted after they died.", ["loop"]
        )
        self.deferred_rows = Gauge(
            f"{prefix}deferred_rows",
            "Rows held in memory because the outbox was unreachable, waiting for a retry.",
            multiprocess_mode="livesum",
        )
        self.deferred_dropped = Counter(
            f"{prefix}deferred_dropped",
            "Held rows lost: dropped when the bounded queue was full, or still held when the process"
            " stopped.",
        )

    def zero_series(self, target: Target, wait_reasons: Iterable[str]) -> None:
        """Create every labelled series whose labels are known at start, at 0: prometheus-client exports a
        labelled metric only once `.labels()` is called, and a dashboard or `rate()` over it shows nothing.
        The kinds are the target's; a child kind is retried or dead-lettered for the reasons it waits on."""
        reasons = tuple(wait_reasons)
        for kind in target.order:
            self.relay_delivered.labels(kind=kind)
        for kind in target.child_kinds:
            for reason in reasons:
                self.relay_retried.labels(kind=kind, reason=reason)
                self.relay_dead.labels(kind=kind, reason=reason)
        for failure in Failure:
            self.relay_batch_failures.labels(failure=failure)


def outbox_metrics(names: OutboxNames) -> OutboxMetrics:
    return _by_prefix(names.metric_prefix)


@functools.cache
def _by_prefix(prefix: str) -> OutboxMetrics:
    return OutboxMetrics(prefix)
