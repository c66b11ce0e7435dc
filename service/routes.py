"""URL map and CORS."""

from __future__ import annotations

import aiohttp_cors
from aiohttp import web

from service.config import Config
from service.views import admin, ask_eco, health, metrics, openapi, page, signals, status

EXPOSED_HEADERS = (
    "X-Eco-Interaction-Id",
    "X-Eco-Guest-Id",
    "X-Eco-Session-Id",
    "X-Stream-Id",
    "X-Eco-Client-Message-Id",
    "Retry-After",
)
ALLOWED_HEADERS = (
    "Content-Type",
    "Accept",
    "Authorization",
    "Idempotency-Key",
    "Last-Event-Id",
    "X-Eco-Interaction-Id",
    "X-Eco-Guest-Id",
    "X-Eco-Session-Id",
    "X-Eco-Client-Message-Id",
)


def setup_routes(app: web.Application, config: Config) -> None:
    api = [
        app.router.add_post("/api/ask-eco", ask_eco.ask_eco, name="ask-eco"),
        app.router.add_post("/api/signal", signals.post_signal, name="signal"),
    ]
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/api/admin/outbox/stats", admin.outbox_stats)
    app.router.add_get("/api/admin/outbox/dead", admin.outbox_dead)
    app.router.add_post("/api/admin/outbox/requeue", admin.outbox_requeue)
    app.router.add_post("/api/admin/outbox/purge-dead", admin.outbox_purge_dead)
    app.router.add_get(
        "/api/interactions/{interaction_id}/signals", status.interaction_signals, name="interaction-signals"
    )
    app.router.add_get("/api/openapi.json", openapi.openapi_json)
    app.router.add_get("/", page.index)
    app.router.add_static("/static/", page.STATIC_DIR, name="static")
    setup_cors(app, config, api)


def setup_cors(app: web.Application, config: Config, routes: list[web.AbstractRoute]) -> None:
    """Only the configured origins may call the API from a browser; none when ECO_CORS_ORIGINS is empty."""
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=False,
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        allow_methods=("POST", "OPTIONS"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in config.cors_origins})
    for route in routes:
        cors.add(route)
