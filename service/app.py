"""The application factory: the same one `make run` serves and the tests build."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from loguru import logger

from outbox.background import BackgroundTask
from outbox.deferred import DeferredWrites
from outbox.enqueue import OutboxWriter
from outbox.metrics import outbox_metrics
from outbox.relay import Relay, held_reasons
from outbox.retention import Purger
from outbox.wakeup import NotifyListener
from service.chat.interaction import InteractionRegistry
from service.chat.responder import build_responder
from service.config import Config
from service.http.headers import quiet_malformed_requests
from service.http.metrics import zero_http_series
from service.http.middleware import (
    RATE_LIMITED_ROUTES,
    error_middleware,
    header_middleware,
    metrics_middleware,
    rate_limit_middleware,
)
from service.http.ratelimit import RateLimiter
from service.http.routes import setup_routes
from service.keys import (
    CONFIG,
    DATABASES,
    DEFERRED,
    NOT_ADDED,
    RATE_LIMITER,
    RELAY,
    RESPONDER,
    SIDE_LOOPS,
    STREAMS,
    WRITER,
)
from service.store import migrations
from service.store.database import open_databases
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET

# Streams get this long to send their final event on shutdown before aiohttp cancels the handlers.
STREAM_SHUTDOWN_S = 5.0
# Completions held while the outbox was down get this long to land on shutdown.
DEFERRED_FLUSH_S = 5.0


async def databases_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    databases = await open_databases(config)
    if config.migrate_on_start:
        try:
            outcomes = await migrations.migrate_dsns(
                databases.outbox_dsn, databases.target_dsn, config.migrations
            )
        except BaseException:
            await databases.close()
            raise
        migrations.log_outcomes(outcomes)
        for outcome in outcomes.values():
            app[NOT_ADDED].update(outcome.not_added)
    app[DATABASES] = databases
    yield
    await databases.close()


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """Writer, deferred writes, relay, NOTIFY listener (when there is a relay loop to wake) and purger; on
    the way out the held completions are flushed through the writer before it closes, and the relay finishes
    its batch."""
    config = app[CONFIG]
    databases = app[DATABASES]
    relay = Relay(databases.outbox, databases.target, ECO_TARGET, config.relay, names=OUTBOX_NAMES)
    writer = OutboxWriter(
        databases.outbox,
        OUTBOX_NAMES,
        max_rows=config.intake_batch_max_rows,
        wait_ms=config.intake_batch_wait_ms,
        flushers=config.intake_flushers,
        timeout_s=config.enqueue_timeout_s,
    )
    purger = Purger(databases.outbox, OUTBOX_NAMES, config.purge)
    # The NOTIFY wakes a relay loop: a process with none (an intake-only node, or an HTTP process beside the
    # relay process) would take one notification per intake commit for nothing.
    side_loops: tuple[BackgroundTask, ...] = (purger,)
    if config.relay.loops > 0:
        listener = NotifyListener(
            databases.outbox_dsn, relay.wake, OUTBOX_NAMES, timeout_s=config.db_timeout_s
        )
        side_loops = (listener, purger)
    deferred = DeferredWrites(writer, max_rows=config.deferred_max_rows, retry_s=config.deferred_retry_s)
    await writer.start()
    deferred.start()
    if config.relay.loops == 0 and config.relay_report is None:
        logger.info("intake only (ECO_RELAY_LOOPS=0): a relay running elsewhere delivers the outbox")
    relay.start()
    for task in side_loops:
        task.start()
    app[WRITER] = writer
    app[RELAY] = relay
    app[SIDE_LOOPS] = side_loops
    app[DEFERRED] = deferred
    yield
    await deferred.close(DEFERRED_FLUSH_S)
    await writer.close()
    for task in side_loops:
        await task.stop()
    await relay.stop()


async def responder_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = aiohttp.ClientSession() if config.llm_url else None
    app[RESPONDER] = build_responder(config, session)
    yield
    if session is not None:
        await session.close()


async def end_streams(app: web.Application) -> None:
    await app[STREAMS].stop_all(STREAM_SHUTDOWN_S)


def create_app(config: Config | None = None) -> web.Application:
    config = config or Config.from_env()
    limits = config.limits
    quiet_malformed_requests()
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, header_middleware, rate_limit_middleware],
        client_max_size=max(limits.ask_body_bytes, limits.signal_body_bytes),
    )
    app[CONFIG] = config
    app[STREAMS] = InteractionRegistry()
    app[NOT_ADDED] = dict(config.not_added)
    app[RATE_LIMITER] = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
    app.cleanup_ctx.append(databases_ctx)
    app.cleanup_ctx.append(outbox_ctx)
    app.cleanup_ctx.append(responder_ctx)
    app.on_shutdown.append(end_streams)
    setup_routes(app, config)
    outbox_metrics(OUTBOX_NAMES).zero_series(ECO_TARGET, wait_reasons=held_reasons(ECO_TARGET))
    zero_http_series(app.router, RATE_LIMITED_ROUTES)
    return app
