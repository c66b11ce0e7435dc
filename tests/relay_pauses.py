"""Pause hooks for the relay: a test stops a relay's batch at a named point, does something else (runs another
relay), then lets it go on, so an interleaving is pinned instead of hoped for."""

from __future__ import annotations

import asyncio


class Pauses:
    """Stops a batch at each of `points` once: `reached(point)` returns when it stopped there, `resume(point)`
    lets it go on."""

    def __init__(self, *points: str) -> None:
        self._reached = {point: asyncio.Event() for point in points}
        self._resume = {point: asyncio.Event() for point in points}

    async def __call__(self, point: str) -> None:
        if point in self._reached and not self._resume[point].is_set():
            self._reached[point].set()
            await self._resume[point].wait()

    async def reached(self, point: str, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._reached[point].wait()

    def resume(self, point: str) -> None:
        self._resume[point].set()
