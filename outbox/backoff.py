"""Retry delays for rows whose parent has not arrived yet."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter, capped.

    Equal jitter keeps a floor of half the delay, so a row never retries in a tight loop, while the random
    half spreads out the retries of children that all waited on the same late parent.
    """

    base_ms: float = 50.0
    cap_ms: float = 30_000.0

    def delay_ms(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (1 for the first retry)."""
        ceiling = min(self.cap_ms, self.base_ms * 2 ** min(max(attempt - 1, 0), 40))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
