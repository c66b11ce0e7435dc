"""A loop run as a task from start() until stop() cancels it."""

from __future__ import annotations

import asyncio


class BackgroundTask:
    """Base for the outbox's side loops (LISTEN, purge): they hold no transaction, so cancelling is safe."""

    task_name = "outbox-background"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
