"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

import asyncio

from aiohttp import web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from outbox import inspect
from outbox.errors import CONNECTION_ERRORS
from outbox.metrics import RELAY_RUNNING
from service.keys import DATABASES, RELAY
from service.metrics import record_outbox_stats

STATS_TIMEOUT_S = 3.0


async def metrics(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(STATS_TIMEOUT_S):
            rows = await inspect.stats(request.app[DATABASES].outbox)
    except CONNECTION_ERRORS as exc:
        logger.bind(code="db_unavailable").warning("metrics: outbox unreadable: {}", exc)
        rows = None
    record_outbox_stats(rows)
    RELAY_RUNNING.set(1 if request.app[RELAY].running else 0)
    response = web.Response(body=generate_latest(REGISTRY))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
