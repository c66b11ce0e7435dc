"""Prometheus metrics of the outbox, registered once per process in the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
DEFERRED_ROWS = Gauge(
    "eco_outbox_deferred_rows",
    "Rows held in memory because the outbox was unreachable, waiting for a retry.",
    multiprocess_mode="livesum",
)
DEFERRED_DROPPED = Counter(
    "eco_outbox_deferred_dropped",
    "Held rows lost: dropped when the bounded queue was full, or still held when the process stopped.",
)
