"""The names of the service's outbox: its schema, table and NOTIFY channel, and its metrics' prefix.

A running previous release reads and writes these very names: they are never changed in place
(docs/deploys.md)."""

from __future__ import annotations

from outbox.names import OutboxNames

OUTBOX_NAMES = OutboxNames(
    schema="eco_outbox",
    table="events",
    channel="eco_outbox",
    metric_prefix="eco_outbox_",
)
