"""What the relay did lately, kept in memory for the admin page: delivered rows per second over the last
minutes and the last batch. Prometheus holds the long history; this answers "is it moving right now" without
one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

# Five minutes of one-second buckets: enough to see a backlog drain or stall, small enough to send whole.
WINDOW_S = 300


class BatchCounts(Protocol):
    claimed: int
    delivered: int
    retried: int
    dead: int


@dataclass(frozen=True)
class BatchRecord:
    finished_at: datetime
    claimed: int
    delivered: int
    retried: int
    dead: int
    duration_s: float


class RelayActivity:
    """A ring of delivered counts, one bucket per whole second of `clock`; old buckets are reused in place."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._counts = [0] * window_s
        self._seconds = [-1] * window_s
        self.last_batch: BatchRecord | None = None

    def record_batch(self, batch: BatchCounts, duration_s: float) -> None:
        now = self._clock()
        self._add(int(now), batch.delivered)
        self.last_batch = BatchRecord(
            datetime.fromtimestamp(now, UTC),
            batch.claimed,
            batch.delivered,
            batch.retried,
            batch.dead,
            duration_s,
        )

    def _add(self, second: int, count: int) -> None:
        slot = second % self.window_s
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += count

    def delivered_per_s(self) -> tuple[int, list[int]]:
        """The first second of the window (Unix time) and the delivered count of each second up to now."""
        now = int(self._clock())
        first = now - self.window_s + 1
        counts = []
        for second in range(first, now + 1):
            slot = second % self.window_s
            counts.append(self._counts[slot] if self._seconds[slot] == second else 0)
        return first, counts


# One per process, like the Prometheus metrics: every relay loop of the process feeds it.
RELAY_ACTIVITY = RelayActivity()
