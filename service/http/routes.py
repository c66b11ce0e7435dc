"""URL map and CORS."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp_cors.urldispatcher_router_adapter import ResourcesUrlDispatcherRouterAdapter

from service.config import Config
from service.http.views import admin, ask_eco, children, health, metrics, openapi, page, signals, status

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
    "X-Eco-User-Id",
    "X-Stream-Id",
)


def setup_routes(app: web.Application, config: Config) -> None:
    api = [
        app.router.add_post("/api/ask-eco", ask_eco.ask_eco, name="ask-eco"),
        # GET is what a browser's EventSource can send; HEAD answers without starting an interaction.
        app.router.add_get("/api/ask-eco", ask_eco.ask_eco, name="ask-eco-get", allow_head=False),
        app.router.add_route("HEAD", "/api/ask-eco", ask_eco.no_content),
        app.router.add_post("/api/signal", signals.post_signal, name="signal"),
        app.router.add_post("/api/feedback", children.post_feedback, name="feedback"),
        app.router.add_post("/api/module-usage", children.post_module_usage, name="module-usage"),
    ]
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_get("/api/admin/outbox/stats", admin.outbox_stats)
    app.router.add_get("/api/admin/outbox/dead", admin.outbox_dead)
    app.router.add_post("/api/admin/outbox/requeue", admin.outbox_requeue)
    app.router.add_post("/api/admin/outbox/purge-dead", admin.outbox_purge_dead)
    app.router.add_get("/api/admin/relay", admin.relay_state)
    app.router.add_get("/admin", admin.admin_page)
    app.router.add_get(
        "/api/interactions/{interaction_id}/signals", status.interaction_signals, name="interaction-signals"
    )
    app.router.add_get("/api/openapi.json", openapi.openapi_json)
    app.router.add_get("/", page.index)
    app.router.add_static("/static/", page.STATIC_DIR, name="static")
    setup_cors(app, config, api)


class AllowedOrigins(Mapping[str, aiohttp_cors.ResourceOptions]):
    """The CORS options of each allowed origin, exact or by pattern.

    aiohttp-cors looks an origin up by exact key (or `*`) and has no patterns; handed this mapping as its
    defaults, it finds `https://app.vercel.app` under `https://*.vercel.app` too.
    """

    def __init__(self, origins: tuple[str, ...], options: aiohttp_cors.ResourceOptions) -> None:
        self._exact = {origin: options for origin in origins if "*" not in origin}
        patterns = [_origin_pattern(origin) for origin in origins if "*" in origin]
        self._pattern = re.compile("|".join(patterns)) if patterns else None
        self._options = options

    def __getitem__(self, origin: str) -> aiohttp_cors.ResourceOptions:
        if origin in self._exact:
            return self._exact[origin]
        if origin != "*" and self._pattern is not None and self._pattern.fullmatch(origin):
            return self._options
        raise KeyError(origin)

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)


def _origin_pattern(origin: str) -> str:
    """`*` stands for one or more host labels (`https://*.vercel.app`), never for a `/`, `:` or `@`."""
    return "[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*".join(re.escape(part) for part in origin.split("*"))


class _RouterAdapter(ResourcesUrlDispatcherRouterAdapter):
    """aiohttp-cors's own adapter, except that an OPTIONS without an Origin (not a CORS preflight, which
    aiohttp-cors would refuse with a 403) answers 204."""

    def add_preflight_handler(
        self, routing_entity: web.AbstractRoute | web.AbstractResource, handler: Handler
    ) -> None:
        if isinstance(routing_entity, web.Resource):
            handler = _plain_options(handler)
        super().add_preflight_handler(routing_entity, handler)


def _plain_options(preflight: Handler) -> Handler:
    async def options(request: web.Request) -> web.StreamResponse:
        if hdrs.ORIGIN not in request.headers:
            return web.Response(status=204)
        return await preflight(request)

    return options


def setup_cors(app: web.Application, config: Config, routes: list[web.AbstractRoute]) -> None:
    """Only the configured origins (exact, or a pattern like `https://*.vercel.app`) may call the API from a
    browser, with credentials (the ECO app's postSignal sends them): their own origin is echoed, never `*`."""
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=True,
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        allow_methods=("GET", "POST", "OPTIONS"),
        max_age=600,
    )
    origins = AllowedOrigins(config.cors_origins, options)
    cors = aiohttp_cors.CorsConfig(app, router_adapter=_RouterAdapter(app.router, origins))
    for route in routes:
        cors.add(route)
