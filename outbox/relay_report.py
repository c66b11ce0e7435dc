"""The relay process's health, for the HTTP processes beside it to answer /readyz and /metrics with.

The relay process rewrites one small JSON file every REPORT_INTERVAL_S (written aside, then renamed, so
that a reader never sees half of one). A reader takes a report older than STALE_AFTER_S for a relay that
stopped reporting, frozen or gone, and the node for not ready, as it would be with its own relay stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outbox.relay import Relay
from outbox.wakeup import NotifyListener

REPORT_INTERVAL_S = 0.5
STALE_AFTER_S = 5.0
AGE_FIELD = "last_success_age_s"


@dataclass(frozen=True)
class RelayReport:
    problems: list[str]
    loops: dict[str, dict[str, Any]]
    # The relay process, and how long ago it wrote this report (None: no report to read).
    pid: int | None = None
    age_s: float | None = None

    @property
    def running(self) -> bool:
        return not self.problems


def write_report(path: Path, relay: Relay, listener: NotifyListener) -> None:
    problems = relay.problems()
    if not listener.running:
        problems.append(f"{listener.task_name} not running")
    body = {
        # CLOCK_MONOTONIC is one clock for every process of the machine, and does not jump.
        "written_monotonic_s": time.monotonic(),
        "pid": os.getpid(),
        "problems": problems,
        "loops": {health.name: health.report() for health in (*relay.loops, listener.health)},
    }
    aside = path.with_name(path.name + ".new")
    aside.write_text(json.dumps(body))
    aside.replace(path)


async def keep_reporting(path: Path, relay: Relay, listener: NotifyListener, stop: asyncio.Event) -> None:
    """Report until `stop` is set, then remove the report: a stopped relay is not a relay."""
    try:
        while not stop.is_set():
            write_report(path, relay, listener)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_INTERVAL_S):
                    await stop.wait()
    finally:
        remove_report(path)


def remove_report(path: Path) -> None:
    path.unlink(missing_ok=True)


def _aged(age_s: float | None, since_written_s: float) -> float | None:
    return None if age_s is None else round(age_s + since_written_s, 3)


def read_report(path: Path) -> RelayReport:
    """The last report, its loops' ages counted to now; a problem if there is none or it is stale."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError):
        return RelayReport(["relay process not reporting (not started, or stopped)"], {})
    age_s = time.monotonic() - float(body["written_monotonic_s"])
    loops = {
        name: {**report, AGE_FIELD: _aged(report[AGE_FIELD], age_s)} for name, report in body["loops"].items()
    }
    problems = list(body["problems"])
    if age_s > STALE_AFTER_S:
        problems = [f"relay process silent for {age_s:.1f} s (frozen, or gone)"]
    return RelayReport(problems, loops, int(body["pid"]), round(age_s, 3))
