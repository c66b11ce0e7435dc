"""Per-client rate limit on intake: a token bucket per client address, held in a bounded LRU map. A request
costs a token, and a batch of signals one per signal: a request may carry a hundred rows."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """`rate_per_s` tokens a second on average, bursts up to `burst` (a rate of 0 turns it off); forgets
    the least recent client beyond `max_clients`, so a flood of new addresses cannot grow memory unbounded."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_clients: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_s
        self._burst = max(burst, 1.0)
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str, cost: float = 1.0) -> float:
        """0 when the request may pass (and its `cost` is taken), else the seconds until it would. A cost
        above the burst is charged as the burst, so that the largest request allowed can pass at all."""
        if self._rate <= 0:
            return 0.0
        cost = min(cost, self._burst)
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        wait_s = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait_s = (cost - tokens) / self._rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait_s
