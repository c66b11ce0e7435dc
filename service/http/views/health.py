"""Liveness and readiness, and the ECO web app's health checks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from outbox.errors import CONNECTION_ERRORS
from outbox.migrations import pending
from outbox.relay_report import read_report
from service.keys import CONFIG, DATABASES, NOT_ADDED, RELAY, RESPONDER, SIDE_LOOPS, WRITER
from service.store import migrations

READY_TIMEOUT_S = 3.0
INTAKE_ONLY = "none in this process (ECO_RELAY_LOOPS=0): it relies on a relay running elsewhere"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def plain_health(request: web.Request) -> web.Response:
    """GET /health: alive, as the ECO backend answered it (text `ok`)."""
    return web.Response(text="ok")


async def readiness(app: web.Application) -> tuple[list[str], dict[str, dict[str, Any]], dict[str, object]]:
    """Why the node is not ready (nothing when it is), each outbox loop's report, and the details readyz
    adds (optional migrations not added, an intake-only node).

    Ready when both databases answer, no migration is pending, every outbox loop runs and no relay loop's
    last batches all failed."""
    databases = app[DATABASES]
    problems: list[str] = []
    # Optional migrations not applied: the service works without them, and says what it lacks.
    not_added: dict[str, str] = {}
    for role, pool, files in migrations.roles(databases):
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                missing, optional = await pending(pool, files, migrations.LEDGER)
        except (*CONNECTION_ERRORS, TimeoutError) as exc:
            problems.append(f"{role} database unreachable: {exc.__class__.__name__}")
            continue
        if missing:
            problems.append(f"{role} database has pending migrations: {', '.join(missing)}")
        for migration in optional:
            not_added[migration.version] = app[NOT_ADDED].get(
                migration.version, f"not applied; without it, {migration.why}"
            )
    config = app[CONFIG]
    relay = app[RELAY]
    writer = app[WRITER]
    side_loops = app[SIDE_LOOPS]
    details: dict[str, object] = {"not_added": not_added} if not_added else {}
    relay_loops = {health.name: health.report() for health in relay.loops}
    if config.relay_report is not None:
        report = read_report(config.relay_report)
        problems.extend(report.problems)
        relay_loops = report.loops
        details["relay_process"] = {"pid": report.pid, "reported_s_ago": report.age_s}
    elif config.relay.loops == 0:
        # An intake-only node, ready without a relay of its own.
        details["relay"] = INTAKE_ONLY
    else:
        problems.extend(relay.problems())
    if not writer.running:
        problems.append("intake writer not running")
    problems.extend(f"{task.task_name} not running" for task in side_loops if not task.running)
    loops = {
        **relay_loops,
        **{health.name: health.report() for health in (*writer.loops, *(task.health for task in side_loops))},
    }
    return problems, loops, details


async def readyz(request: web.Request) -> web.Response:
    """503 with why not; `loops` reports each loop, for operators and the admin page."""
    problems, loops, details = await readiness(request.app)
    if problems:
        return web.json_response(
            {"status": "unavailable", "problems": problems, "loops": loops, **details}, status=503
        )
    return web.json_response({"status": "ready", "loops": loops, **details})


async def api_health(request: web.Request) -> web.Response:
    """GET /api/health, which the ECO web app polls, in the ECO backend's shape; ready as /readyz decides.

    The ECO backend counted the prompt modules it had indexed from its prompt folders (`roots`). Here the
    modules are those the responder's replies are named with (`module_combo` in `done`), read from no
    folder."""
    problems, _, _ = await readiness(request.app)
    responder = request.app[RESPONDER]
    if problems:
        return web.json_response({"ok": False, "reason": "; ".join(problems)}, status=503)
    return web.json_response(
        {
            "ok": True,
            "prompts": "ready",
            "modulesIndexed": len(responder.modules),
            "roots": [],
            "responder": responder.name,
            "checkedAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
    )
