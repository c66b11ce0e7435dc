"""What the engine's objects are called in the database and in the metrics: the user of the engine names
them once, and every statement, the wake-up channel and every metric follow."""

from __future__ import annotations

import re
from dataclasses import dataclass

from outbox.sql import identifier

_METRIC_PREFIX = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class OutboxNames:
    """The schema and table of the outbox, the NOTIFY channel the relay listens on, and the prefix of the
    engine's Prometheus metrics."""

    schema: str
    table: str
    channel: str
    metric_prefix: str

    def __post_init__(self) -> None:
        identifier(self.schema)
        identifier(self.table)
        # The log of delivered rows, `{table}_delivered` in the statements.
        identifier(f"{self.table}_delivered")
        identifier(self.channel)
        if not _METRIC_PREFIX.match(self.metric_prefix):
            raise ValueError(f"not a Prometheus metric name prefix: {self.metric_prefix!r}")

    @property
    def identifiers(self) -> dict[str, str]:
        return {"schema": self.schema, "table": self.table, "channel": self.channel}
