"""Serving the app: SIGTERM stops intake, ends the streams, lets the relay finish its batch, closes pools."""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from loguru import logger

from service.app import create_app
from service.config import Config

SHUTDOWN_TIMEOUT_S = 10.0
# After an answer sent before the body ended (a 408, a 413), what is left of the body is read and dropped
# for at most this long before the connection closes, so the client reads the answer instead of a reset.
LINGER_S = 1.0
# Older generations are collected this many times less often than the one below them (Python: 10 and 10).
GC_OLDER_RATIOS = (50, 100)


def gc_tuning(gen0_threshold: int) -> Callable[[web.Application], Awaitable[None]]:
    """A start-up hook: what lives as long as the process (the app, pools, modules) leaves the collector's
    view, and the young generation is collected every `gen0_threshold` allocations instead of 700, which
    under load means a collection every few requests (its effect on intake is measured in
    docs/performance.md)."""

    async def tune(app: web.Application) -> None:
        gc.freeze()
        if gen0_threshold:
            gc.set_threshold(gen0_threshold, *GC_OLDER_RATIOS)

    return tune


def server_options(config: Config) -> dict[str, Any]:
    """The HTTP server's own settings, for `serve` and for tests that start the server as it does."""
    return {
        # A client that goes away cancels its handler: the stream stops generating and is completed.
        "handler_cancellation": True,
        # aiohttp closes a connection whose request head is not complete this long after the connection
        # opened or its last answer ended: the deadline for reading headers.
        "keepalive_timeout": config.header_timeout_s,
        "lingering_time": LINGER_S,
        "shutdown_timeout": SHUTDOWN_TIMEOUT_S,
        "access_log": None,
    }


def serve(config: Config, *, reuse_port: bool = False) -> None:
    """Serve in this process (ECO_PROCESSES > 1 or ECO_RELAY_PROCESS is service.runtime.processes'
    supervisor, which runs this in each of its HTTP processes)."""
    logger.info("eco-outbox listening on http://{}:{}", config.host, config.port)
    app = create_app(config)
    app.on_startup.append(gc_tuning(config.gc_gen0_threshold))
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        reuse_port=reuse_port or None,
        print=None,
        **server_options(config),
    )
