"""URL map: every route but HEAD and the static files has a name, under which service/http/openapi.py
describes it."""

from __future__ import annotations

from aiohttp import web

from service.config import Config
from service.http.cors import setup_cors
from service.http.views import admin, ask_eco, children, health, metrics, openapi, page, signals, status

# Route name -> path of the passive signals' view.
SIGNAL_ROUTES = {"signal": "/api/signal", "signal-unprefixed": "/signal"}


def setup_routes(app: web.Application, config: Config) -> None:
    api = [
        app.router.add_post("/api/ask-eco", ask_eco.ask_eco, name="ask-eco"),
        # GET is what a browser's EventSource can send; HEAD answers without starting an interaction.
        app.router.add_get("/api/ask-eco", ask_eco.ask_eco, name="ask-eco-get", allow_head=False),
        app.router.add_route("HEAD", "/api/ask-eco", ask_eco.no_content),
        # The ECO production app posts its passive signals to /signal, with no /api.
        *(app.router.add_post(path, signals.post_signal, name=name) for name, path in SIGNAL_ROUTES.items()),
        app.router.add_get("/api/health", health.api_health, name="api-health"),
        app.router.add_get("/health", health.plain_health, name="health"),
        app.router.add_post("/api/feedback", children.post_feedback, name="feedback"),
        app.router.add_post("/api/module-usage", children.post_module_usage, name="module-usage"),
    ]
    app.router.add_get("/healthz", health.healthz, name="healthz")
    app.router.add_get("/readyz", health.readyz, name="readyz")
    app.router.add_get("/metrics", metrics.metrics, name="metrics")
    app.router.add_get("/api/admin/outbox/stats", admin.outbox_stats, name="outbox-stats")
    app.router.add_get("/api/admin/outbox/dead", admin.outbox_dead, name="outbox-dead")
    app.router.add_post("/api/admin/outbox/requeue", admin.outbox_requeue, name="outbox-requeue")
    app.router.add_post("/api/admin/outbox/purge-dead", admin.outbox_purge_dead, name="outbox-purge-dead")
    app.router.add_get("/api/admin/relay", admin.relay_state, name="relay-state")
    app.router.add_get("/admin", admin.admin_page, name="admin-page")
    app.router.add_get(
        "/api/interactions/{interaction_id}/signals", status.interaction_signals, name="interaction-signals"
    )
    app.router.add_get("/api/openapi.json", openapi.openapi_json, name="openapi")
    app.router.add_get("/", page.index, name="page")
    app.router.add_static("/static/", page.STATIC_DIR, name="static")
    setup_cors(app, config.cors_origins, api)
