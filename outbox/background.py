"""A loop run as a task from start() until stop(), and a cancel that cannot be lost."""

from __future__ import annotations

import asyncio

RECANCEL_INTERVAL_S = 0.5


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for its end, cancelling again if the cancellation was swallowed: a cancel that
    lands as an aiopg query completes can be lost inside asyncio.wait_for, and the loop would run on."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL_S)
    if not task.cancelled():
        task.exception()  # retrieve it: a loop's own failure was logged where it happened


class BackgroundTask:
    """Base for the outbox's side loops (LISTEN, purge): they hold no transaction, so cancelling is safe."""

    task_name = "outbox-background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
