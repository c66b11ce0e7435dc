"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from outbox import admin as outbox_admin
from outbox.errors import CONNECTION_ERRORS
from outbox.metrics import outbox_metrics
from outbox.relay_report import read_report
from service.http.metrics import record_outbox_stats
from service.keys import CONFIG, DATABASES, RELAY
from service.store.outbox_names import OUTBOX_NAMES

STATS_TIMEOUT_S = 3.0


def _registry(metrics_dir: Path | None) -> CollectorRegistry:
    """This process's registry, or under ECO_PROCESSES > 1 every process's values summed from the files they
    share: whichever worker the kernel hands the scrape to, the answer is the service's."""
    if metrics_dir is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return registry


async def metrics(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(STATS_TIMEOUT_S):
            rows = await outbox_admin.stats(request.app[DATABASES].outbox, OUTBOX_NAMES)
    except CONNECTION_ERRORS as exc:
        logger.bind(code="db_unavailable").warning("metrics: outbox unreadable: {}", exc)
        rows = None
    record_outbox_stats(rows)
    config = request.app[CONFIG]
    if config.relay_report is not None:
        running = read_report(config.relay_report).running
    else:
        # An intake-only node (ECO_RELAY_LOOPS=0) has no loop to stop: it does not count as a stopped relay.
        running = config.relay.loops == 0 or request.app[RELAY].running
    outbox_metrics(OUTBOX_NAMES).relay_running.set(1 if running else 0)
    response = web.Response(body=generate_latest(_registry(request.app[CONFIG].metrics_dir)))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response
