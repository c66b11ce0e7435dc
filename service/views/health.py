"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from aiohttp import web

from outbox.errors import CONNECTION_ERRORS
from service import migrations
from service.keys import DATABASES, RELAY

READY_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when both databases answer, no migration is pending, and the relay runs; 503 with why not."""
    databases = request.app[DATABASES]
    problems: list[str] = []
    for role, pool, sets in migrations.roles(databases):
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                missing = await migrations.pending(pool, sets)
        except (*CONNECTION_ERRORS, TimeoutError) as exc:
            problems.append(f"{role} database unreachable: {exc.__class__.__name__}")
            continue
        if missing:
            problems.append(f"{role} database has pending migrations: {', '.join(missing)}")
    if not request.app[RELAY].running:
        problems.append("relay not running")
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})
