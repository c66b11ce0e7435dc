"""Serving the app: SIGTERM stops intake, ends the streams, lets the relay finish its batch, closes pools."""

from __future__ import annotations

from aiohttp import web
from loguru import logger

from service.app import create_app
from service.config import Config

SHUTDOWN_TIMEOUT_S = 10.0


def serve(config: Config, *, reuse_port: bool = False) -> None:
    """Serve in this process; with ECO_WORKERS > 1, supervise that many processes sharing the port."""
    if config.workers > 1:
        from service.workers import supervise

        supervise(config)
        return
    logger.info("eco-outbox listening on http://{}:{}", config.host, config.port)
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        reuse_port=reuse_port or None,
        # A client that goes away cancels its handler: the stream stops generating and is completed.
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=None,
        print=None,
    )
