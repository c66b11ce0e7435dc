"""CORS: the browser origins that may call the ECO routes, with credentials, and what they may send and read.

aiohttp-cors does the work; two things are ours. Its origins are looked up by exact key, so AllowedOrigins
adds patterns. And it adds its headers only to answers of the routes it was given, so an unknown path or a
method the route lacks (404, 405) would leave without them and the browser would report a CORS failure
instead of the status: the router adapter hands those answers the same origins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from aiohttp_cors.urldispatcher_router_adapter import (
    ResourcesUrlDispatcherRouterAdapter,
)

from service.config import origin_pattern
from service.http.headers import (
    HEADER_BIAS_HINT,
    HEADER_CLIENT_ID,
    HEADER_CLIENT_MESSAGE_ID,
    HEADER_GUEST_ID,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INTERACTION_ID,
    HEADER_LAST_EVENT_ID,
    HEADER_PLAIN_GUEST_ID,
    HEADER_PLAIN_SESSION_ID,
    HEADER_REQUESTED_WITH,
    HEADER_SESSION_ID,
    HEADER_STREAM_ID,
    HEADER_USER_ID,
)

# The ECO backend's methods and headers, and ours: a preflight that leaves one out fails the call in the
# browser before it reaches a handler.
ALLOWED_METHODS = (hdrs.METH_GET, hdrs.METH_POST, hdrs.METH_OPTIONS, hdrs.METH_HEAD)
ALLOWED_HEADERS = (
    hdrs.CONTENT_TYPE,
    hdrs.ACCEPT,
    hdrs.AUTHORIZATION,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_LAST_EVENT_ID,
    HEADER_INTERACTION_ID,
    HEADER_GUEST_ID,
    HEADER_SESSION_ID,
    HEADER_CLIENT_MESSAGE_ID,
    HEADER_USER_ID,
    HEADER_STREAM_ID,
    HEADER_CLIENT_ID,
    HEADER_BIAS_HINT,
    HEADER_PLAIN_GUEST_ID,
    HEADER_PLAIN_SESSION_ID,
    HEADER_REQUESTED_WITH,
)
# What the app's code may read from an answer.
EXPOSED_HEADERS = (
    HEADER_INTERACTION_ID,
    HEADER_GUEST_ID,
    HEADER_SESSION_ID,
    HEADER_STREAM_ID,
    HEADER_CLIENT_MESSAGE_ID,
    hdrs.RETRY_AFTER,
)
PREFLIGHT_MAX_AGE_S = 600


class AllowedOrigins(Mapping[str, aiohttp_cors.ResourceOptions]):
    """The CORS options of each allowed origin, exact, by `*` pattern or by `^…$` expression (see
    service.config.origin_pattern). `*` itself is never a key: an origin is allowed by name or not at all."""

    def __init__(self, entries: tuple[str, ...], options: aiohttp_cors.ResourceOptions) -> None:
        patterns = {entry: origin_pattern(entry) for entry in entries}
        self._exact = {
            entry: options for entry, pattern in patterns.items() if pattern is None and entry != "*"
        }
        self._patterns = [pattern for pattern in patterns.values() if pattern is not None]
        self._options = options

    def __getitem__(self, origin: str) -> aiohttp_cors.ResourceOptions:
        if origin in self._exact:
            return self._exact[origin]
        if origin != "*" and any(pattern.fullmatch(origin) for pattern in self._patterns):
            return self._options
        raise KeyError(origin)

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)

    def __bool__(self) -> bool:
        # aiohttp-cors refuses every preflight when its origins are falsy: patterns count too.
        return bool(self._exact or self._patterns)


def _unmatched(request: web.Request) -> bool:
    """No route took the request: the router answers 404 or 405."""
    return request.match_info.http_exception is not None


class _RouterAdapter(ResourcesUrlDispatcherRouterAdapter):
    """aiohttp-cors's own adapter, except that an OPTIONS without an Origin (not a CORS preflight, which
    aiohttp-cors would refuse with a 403) answers 204, and an unmatched request (404, 405) gets the CORS
    headers of any ECO route, so that the browser shows its status."""

    def __init__(self, router: web.UrlDispatcher, origins: AllowedOrigins) -> None:
        super().__init__(router, origins)
        self._origins = origins

    def add_preflight_handler(
        self, routing_entity: web.AbstractRoute | web.AbstractResource, handler: Handler
    ) -> None:
        if isinstance(routing_entity, web.Resource):
            handler = _plain_options(handler)
        super().add_preflight_handler(routing_entity, handler)

    def is_cors_enabled_on_request(self, request: web.Request) -> bool:
        return _unmatched(request) or super().is_cors_enabled_on_request(request)

    def get_non_preflight_request_config(self, request: web.Request) -> Mapping[str, Any]:
        if _unmatched(request):
            return self._origins
        return super().get_non_preflight_request_config(request)


def _plain_options(preflight: Handler) -> Handler:
    async def options(request: web.Request) -> web.StreamResponse:
        if hdrs.ORIGIN not in request.headers:
            return web.Response(status=204)
        return await preflight(request)

    return options


def setup_cors(app: web.Application, origins: tuple[str, ...], routes: list[web.AbstractRoute]) -> None:
    """Only the configured origins may call the ECO routes from a browser, with credentials (the ECO app's
    signals send them): their own origin is echoed, never `*`. The answer is the same for an error."""
    options = aiohttp_cors.ResourceOptions(
        allow_credentials=True,
        expose_headers=EXPOSED_HEADERS,
        allow_headers=ALLOWED_HEADERS,
        allow_methods=ALLOWED_METHODS,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
    adapter = _RouterAdapter(app.router, AllowedOrigins(origins, options))
    cors = aiohttp_cors.CorsConfig(app, router_adapter=adapter)
    for route in routes:
        cors.add(route)
    app.on_response_prepare.append(_vary_on_origin(adapter))


def _vary_on_origin(adapter: _RouterAdapter) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """`Vary: Origin` on every answer whose CORS headers depend on the Origin, as the ECO backend sent it: a
    cache between the browser and the service must not hand one origin's answer to another."""

    async def vary(request: web.Request, response: web.StreamResponse) -> None:
        if not adapter.is_cors_enabled_on_request(request):
            return
        present = [item.strip().lower() for item in response.headers.get(hdrs.VARY, "").split(",")]
        if "origin" not in present and "*" not in present:
            response.headers[hdrs.VARY] = ", ".join(
                [value for value in (response.headers.get(hdrs.VARY), hdrs.ORIGIN) if value]
            )

    return vary
