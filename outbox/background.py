"""Loops run as tasks from start() until stop(): supervised, so a loop that dies is restarted, with a cancel
that cannot be lost, and a health record per loop that /readyz reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loguru import logger
from prometheus_client import Counter

from outbox.errors import Failure, classify, describe, server_cancelled
from outbox.metrics import outbox_metrics
from outbox.names import OutboxNames

RECANCEL_INTERVAL_S = 0.5
# A loop that died is restarted after this long, doubling while it keeps dying, up to the cap.
RESTART_MIN_S = 0.1
RESTART_MAX_S = 5.0


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for its end, cancelling again if the cancellation was swallowed: a cancel that
    lands as an aiopg query completes can be lost inside asyncio.wait_for, and the loop would run on."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL_S)
    if not task.cancelled():
        task.exception()  # retrieve it: a loop's own failure was logged where it happened


@dataclass
class LoopHealth:
    """What one loop last did: its failures in a row, the last one, its restarts. Written by the loop only."""

    name: str
    running: bool = False
    restarts: int = 0
    consecutive_failures: int = 0
    last_failure_class: str | None = None
    last_failure: str | None = None
    last_success_monotonic_s: float | None = None

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        self.last_success_monotonic_s = time.monotonic()

    def failed(self, failure: Failure | str, error: str) -> None:
        self.consecutive_failures += 1
        self.last_failure_class = str(failure)
        self.last_failure = error

    def report(self) -> dict[str, object]:
        since_s = (
            None
            if self.last_success_monotonic_s is None
            else round(time.monotonic() - self.last_success_monotonic_s, 3)
        )
        return {
            "running": self.running,
            "restarts": self.restarts,
            "consecutive_failures": self.consecutive_failures,
            "last_failure": None
            if self.last_failure is None
            else {"class": self.last_failure_class, "error": self.last_failure},
            "last_success_age_s": since_s,
        }


async def supervise(health: LoopHealth, run: Callable[[], Awaitable[None]], restarts: Counter) -> None:
    """Run `run` until it returns or the task is cancelled; restart it, with a growing delay, whenever it dies
    of anything else, including a server-side cancel that aiopg raised as CancelledError; `restarts` counts
    them by loop."""
    delay_s = RESTART_MIN_S
    while True:
        health.running = True
        try:
            await run()
            return
        except asyncio.CancelledError as exc:
            if not server_cancelled(exc):
                raise
            failure, error = Failure.OUTAGE, describe(exc)
            logger.bind(code="loop_cancelled_by_server", delay_ms=round(delay_s * 1000)).warning(
                "{} cancelled by the server ({}), restarting", health.name, error
            )
        except Exception as exc:
            failure, error = classify(exc), describe(exc)
            logger.bind(code="loop_died", delay_ms=round(delay_s * 1000)).opt(exception=exc).error(
                "{} died, restarting", health.name
            )
        finally:
            health.running = False
        health.failed(failure, error)
        health.restarts += 1
        restarts.labels(loop=health.name).inc()
        await asyncio.sleep(delay_s)
        delay_s = min(delay_s * 2, RESTART_MAX_S)


class BackgroundTask:
    """Base for the outbox's side loops (LISTEN, purge): they hold no transaction, so cancelling is safe."""

    task_name = "outbox-background"

    def __init__(self, names: OutboxNames) -> None:
        self._restarts = outbox_metrics(names).loop_restarts
        self._task: asyncio.Task[None] | None = None
        self.health = LoopHealth(self.task_name)

    def start(self) -> None:
        self._task = asyncio.create_task(
            supervise(self.health, self._run, self._restarts), name=self.task_name
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
