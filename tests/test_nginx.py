"""One hostname for the ECO web app: Debian's nginx runs ops/nginx/ as shipped in front of eco-outbox and a
stand-in for the old ECO backend. The routes file is the one list of what eco-outbox owns: it matches the
router, and every route in it reaches eco-outbox while everything else reaches the old backend intact; the
chat streams frame by frame, child rows land once, CORS comes once from whichever upstream answers, and the
rate limit sees the client behind the proxy."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from service.app import create_app
from service.chat.responder import ChatMessage, Responder
from service.config import Config
from service.keys import RESPONDER
from tests.helpers import fetch, iter_sse, read_sse, scalar, wait_for
from tests.nginx_proxy import SITE, Nginx, owned_routes, uncommented

APP_ORIGIN = "https://ecofrontend888.vercel.app"
# nginx reaches both upstreams from here: the only address eco-outbox trusts for X-Forwarded-For.
PROXY_NETWORK = ip_network("127.0.0.1/32")
# eco-outbox's routes that this hostname leaves to the old backend. Its operator routes are reached on its own
# address (the old backend has a /healthz and a / of its own); /health stays the old backend's, which the
# monitors that probe this hostname already expect. A new route in the router must be put here or in the
# routes file, or test_owned_routes_match_the_router fails.
NOT_PROXIED = frozenset(
    {
        "/",
        "/health",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin",
        "/api/openapi.json",
        "/api/interactions/{interaction_id}/signals",
        "/static",
    }
)
NOT_PROXIED_PREFIX = "/api/admin/"
# Bounds a wait that only a failure would reach (a proxy that holds frames back, a row that never lands).
STREAM_TIMEOUT_S = 20.0
OLD_BACKEND_ANSWER = b'{"memorias": []}'


def router_paths(config: Config) -> dict[str, set[str]]:
    """Every path of eco-outbox's router (as the app factory builds it) with its methods."""
    app = create_app(config)
    return {resource.canonical: {route.method for route in resource} for resource in app.router.resources()}


def test_owned_routes_match_the_router() -> None:
    """Each listed route is one of eco-outbox's, and each of eco-outbox's is listed or left to the old backend
    on purpose: the list cannot drift from the app."""
    routes = router_paths(Config())
    listed = set(owned_routes())
    assert listed - set(routes) == set(), "listed in the routes file but not served by eco-outbox"
    unlisted = {path for path in set(routes) - listed if not path.startswith(NOT_PROXIED_PREFIX)}
    assert unlisted == NOT_PROXIED, "a route of eco-outbox is neither listed nor left to the old backend"


def test_the_routes_file_sends_each_route_to_eco_outbox_and_adds_no_header() -> None:
    routes = owned_routes()
    for path, block in routes.items():
        assert re.search(r"\bproxy_pass\s+http://eco_outbox;", block), path
    site = uncommented(SITE)
    assert len(re.findall(r"\binclude\s+\S+/eco-outbox-routes\.conf;", site)) == 1
    server = site.split("server {", 1)[1]
    assert re.findall(r"\blocation\b[^{]*", server) == ["location / "]
    assert re.findall(r"\bproxy_pass\s+(\S+);", server) == ["http://eco_backend"]
    for text in (site, *routes.values()):
        assert "add_header" not in text, "the proxy adds no header: CORS is each upstream's"


def test_the_stream_is_unbuffered_and_outlasts_the_pings() -> None:
    """nginx's read timeout counts between two reads, and eco-outbox writes at least a ping every
    ECO_SSE_PING_S: a reply of any length is cut only by a timeout shorter than that."""
    block = owned_routes()["/api/ask-eco"]
    assert re.search(r"\bproxy_buffering\s+off;", block)
    value, unit = re.search(r"\bproxy_read_timeout\s+(\d+)([smh]?);", block).groups()  # type: ignore[union-attr]
    timeout_s = int(value) * {"": 1, "s": 1, "m": 60, "h": 3600}[unit]
    assert timeout_s > Config().sse_ping_s
    assert re.search(r"\bproxy_http_version\s+1\.1;", uncommented(SITE))


@dataclass
class Received:
    method: str
    path_qs: str
    version: tuple[int, int]
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class OldBackend:
    """Stands in for the old ECO backend: records what reaches it and answers every route, with CORS of its
    own as the old backend has (the origin echoed, a 204 for a preflight)."""

    received: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received(
                request.method,
                request.raw_path,
                (request.version.major, request.version.minor),
                request.headers,
                await request.read(),
            )
        )
        headers = {"X-Old-Backend": "yes", "Set-Cookie": "eco_guest=g1; Path=/"}
        if origin := request.headers.get("Origin"):
            headers |= {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        if request.method == "OPTIONS":
            headers |= {
                "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                "Access-Control-Allow-Headers": "*",
            }
            return web.Response(status=204, headers=headers)
        return web.Response(
            status=201, body=OLD_BACKEND_ANSWER, headers=headers, content_type="application/json"
        )

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass
class Hostname:
    """nginx in front of eco-outbox and the old backend's stand-in."""

    url: str
    backend: OldBackend


class HeldResponder:
    """Writes one piece, then holds the rest of the reply until the test has read that piece: through a proxy
    that holds frames back until a reply ends (or until it has enough of them to compress), the piece never
    arrives and the stream stalls."""

    name = "held"
    modules: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield "primeiro"
        await self.release.wait()
        yield " e o resto"


@pytest.fixture
async def hostname(
    make_config: Callable[..., Config], aiohttp_server: Any
) -> AsyncIterator[Callable[..., Awaitable[Hostname]]]:
    """Build eco-outbox (config overrides, a responder if given), the old backend and nginx before both."""
    started: list[Nginx] = []

    async def build(responder: Responder | None = None, **overrides: Any) -> Hostname:
        settings = {
            "trusted_proxies": (PROXY_NETWORK,),
            "cors_origins": (APP_ORIGIN,),
            "rate_limit_per_s": 0.0,
            **overrides,
        }
        app = create_app(make_config(**settings))
        if responder is not None:

            async def use_responder(app: web.Application) -> AsyncIterator[None]:
                app[RESPONDER] = responder
                yield

            app.cleanup_ctx.append(use_responder)
        eco_outbox = await aiohttp_server(app)
        backend = OldBackend()
        old = await aiohttp_server(backend.app())
        nginx = Nginx(f"127.0.0.1:{eco_outbox.port}", f"127.0.0.1:{old.port}")
        started.append(nginx)
        await nginx.start()
        return Hostname(nginx.url, backend)

    yield build
    for nginx in started:
        await nginx.stop()


APP_HEADERS = {"Origin": APP_ORIGIN, "X-Client-Id": "webapp", "X-Eco-Guest-Id": str(uuid.uuid4())}
# What the app's preflights ask for: the headers it sends on every call.
APP_REQUEST_HEADERS = "content-type,x-eco-guest-id,x-eco-session-id,x-client-id"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_ask_eco_streams_through_nginx_frame_by_frame(
    hostname: Callable[..., Awaitable[Hostname]], method: str
) -> None:
    """The first chunk arrives while eco-outbox still holds the rest of the reply back."""
    responder = HeldResponder()
    site = await hostname(responder=responder)
    url = f"{site.url}/api/ask-eco"
    request = {"json": {"texto": "Olá", "stream": True}} if method == "POST" else {"params": {"texto": "Olá"}}
    names = []
    async with aiohttp.ClientSession() as session, session.request(method, url, **request) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Encoding" not in resp.headers
        try:
            async with asyncio.timeout(STREAM_TIMEOUT_S):
                async for event in iter_sse(resp):
                    names.append(event.event)
                    if event.event == "chunk" and not responder.release.is_set():
                        assert event.data["delta"] == "primeiro"
                        responder.release.set()
                    if event.event == "done":
                        assert event.data["content"] == "primeiro e o resto"
                        break
        except TimeoutError:
            raise AssertionError(f"the proxy held the stream back; frames read: {names}") from None
    assert names[0] == "prompt_ready" and names[-1] == "done" and names.count("chunk") == 2, names
    assert site.backend.received == []


async def count_rows(db: Any, table: str, interaction_id: str) -> int:
    return await scalar(
        db, f"select count(*) from analytics.{table} where interaction_id = %s", (interaction_id,)
    )


@pytest.mark.slow
async def test_every_child_row_through_nginx_lands_once(
    hostname: Callable[..., Awaitable[Hostname]], db: Any
) -> None:
    """Signals on both paths, feedback and module usage, each posted once through the proxy, as the app posts
    them: one row each in the target once the outbox has delivered everything."""
    site = await hostname()
    reply_id = f"eco-{uuid.uuid4()}"
    async with aiohttp.ClientSession(headers=APP_HEADERS) as session:
        async with session.post(f"{site.url}/api/ask-eco", json={"texto": "Olá", "stream": True}) as resp:
            assert resp.status == 200
            events = await read_sse(resp)
        iid = events[-1].data["meta"]["interaction_id"]
        await wait_for(
            lambda: scalar(db, "select count(*) from analytics.eco_interactions where id = %s", (iid,))
        )
        posts = [
            ("/api/signal", {"signal": "view", "interaction_id": iid}, 202),
            ("/signal", {"signal": "copy", "interaction_id": iid, "message_id": reply_id}, 202),
            (
                "/api/feedback",
                {
                    "interaction_id": iid,
                    "vote": "up",
                    "reason": None,
                    "source": "api",
                    "message_id": reply_id,
                },
                204,
            ),
            (
                "/api/module-usage",
                {
                    "moduleKey": "eco_intro",
                    "position": 1,
                    "tokens": 42,
                    "interactionId": iid,
                    "messageId": reply_id,
                },
                204,
            ),
        ]
        for path, body, status in posts:
            headers = {"X-Eco-Interaction-Id": iid} if "signal" in path else {}
            async with session.post(f"{site.url}{path}", json=body, headers=headers) as resp:
                assert resp.status == status, (path, await resp.text())
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda pending: pending == 0,
        timeout_s=STREAM_TIMEOUT_S,
    )
    signals = await fetch(
        db,
        "select signal, count(*) from analytics.eco_passive_signals"
        " where interaction_id = %s and signal in ('view', 'copy') group by signal",
        (iid,),
    )
    assert dict(signals) == {"view": 1, "copy": 1}
    assert await count_rows(db, "eco_feedback", iid) == 1
    assert await count_rows(db, "eco_module_usages", iid) == 1
    assert site.backend.received == []


@pytest.mark.slow
async def test_a_route_eco_outbox_does_not_own_reaches_the_old_backend_intact(
    hostname: Callable[..., Awaitable[Hostname]],
) -> None:
    """Method, path and query, the app's headers and a body bigger than nginx's in-memory buffer (so that it
    goes through nginx's temp files) arrive as sent, over HTTP/1.1, with the client in X-Forwarded-For; and
    the old backend's answer comes back as it was sent."""
    site = await hostname()
    body = bytes(range(256)) * 256
    sent = {
        "Authorization": "Bearer token-do-app",
        "Content-Type": "application/octet-stream",
        "Cookie": "sb-access-token=abc; eco_guest=g0",
        "X-Eco-Guest-Id": APP_HEADERS["X-Eco-Guest-Id"],
        "X-Eco-Session-Id": "sessao-1",
        "X-Client-Id": "webapp",
        "X-Eco-Bias-Hint": "calma, por favor",
    }
    path_qs = "/api/memorias/registrar?usuario_id=u-1&texto=ol%C3%A1%20mundo&limite=5"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{site.url}{path_qs}", data=body, headers=sent) as resp:
            assert resp.status == 201
            assert await resp.read() == OLD_BACKEND_ANSWER
            assert resp.headers["X-Old-Backend"] == "yes"
            assert resp.headers["Set-Cookie"] == "eco_guest=g1; Path=/"
    [received] = site.backend.received
    assert (received.method, received.path_qs, received.version) == ("POST", path_qs, (1, 1))
    assert received.body == body
    assert {name: received.headers.get(name) for name in sent} == sent
    assert received.headers["X-Forwarded-For"] == "127.0.0.1"
    assert received.headers["Host"] == "127.0.0.1"


@pytest.mark.slow
async def test_eco_outbox_routes_not_listed_stay_with_the_old_backend(
    hostname: Callable[..., Awaitable[Hostname]],
) -> None:
    """Every route of eco-outbox's router that is not listed, and a sub-path of each listed one, reaches the
    old backend through this hostname."""
    site = await hostname()
    unlisted = set(router_paths(Config())) - set(owned_routes())
    paths = sorted(re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path) for path in unlisted)
    paths += [f"{path}/sub" for path in owned_routes()]
    async with aiohttp.ClientSession() as session:
        for path in paths:
            async with session.get(f"{site.url}{path}") as resp:
                assert resp.headers.get("X-Old-Backend") == "yes", path
    assert [received.path_qs for received in site.backend.received] == paths


def method_of(methods: set[str]) -> str:
    """The method a browser's preflight asks about for a route: POST where the route takes it, else GET."""
    return "POST" if "POST" in methods else "GET"


@pytest.mark.slow
async def test_cors_comes_once_from_the_upstream_that_serves_the_route(
    hostname: Callable[..., Awaitable[Hostname]],
) -> None:
    """A preflight from the production origin, and the call after it, carry exactly one
    Access-Control-Allow-Origin, for every route eco-outbox owns (answered by eco-outbox) and for one it does
    not (answered by the old backend); an ask-eco body over eco-outbox's limit is eco-outbox's JSON 413 with
    its CORS, not nginx's bare 413."""
    site = await hostname()
    routes = router_paths(Config())
    async with aiohttp.ClientSession() as session:
        for path in owned_routes():
            preflight = {
                "Origin": APP_ORIGIN,
                "Access-Control-Request-Method": method_of(routes[path]),
                "Access-Control-Request-Headers": APP_REQUEST_HEADERS,
            }
            async with session.options(f"{site.url}{path}", headers=preflight) as resp:
                assert resp.status in (200, 204), path
                assert resp.headers.getall("Access-Control-Allow-Origin", []) == [APP_ORIGIN], path
        assert site.backend.received == []
        async with session.options(f"{site.url}/api/memorias", headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers.getall("Access-Control-Allow-Origin", []) == [APP_ORIGIN]
        assert [received.method for received in site.backend.received] == ["OPTIONS"]

        async with session.post(
            f"{site.url}/api/signal",
            json={"signal": "view", "interaction_id": str(uuid.uuid4())},
            headers=APP_HEADERS,
        ) as resp:
            assert resp.status == 202
            assert resp.headers.getall("Access-Control-Allow-Origin", []) == [APP_ORIGIN]
        async with session.get(f"{site.url}/api/memorias", headers=APP_HEADERS) as resp:
            assert resp.headers["X-Old-Backend"] == "yes"
            assert resp.headers.getall("Access-Control-Allow-Origin", []) == [APP_ORIGIN]

        oversized = b"{" + b" " * Config().limits.ask_body_bytes + b"}"
        async with session.post(
            f"{site.url}/api/ask-eco",
            data=io.BytesIO(oversized),
            headers={**APP_HEADERS, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 413
            assert resp.content_type == "application/json"
            assert resp.headers.getall("Access-Control-Allow-Origin", []) == [APP_ORIGIN]


async def post_signals(url: str, source: str, forwarded_for: str | None = None, count: int = 1) -> list[int]:
    """Signals posted from the loopback address `source`: another client than the proxy (127.0.0.1)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    statuses = []
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            body = {"signal": "view", "interaction_id": str(uuid.uuid4())}
            async with session.post(f"{url}/api/signal", json=body, headers=headers) as resp:
                statuses.append(resp.status)
    return statuses


@pytest.mark.slow
async def test_the_rate_limit_sees_the_client_behind_nginx(
    hostname: Callable[..., Awaitable[Hostname]],
) -> None:
    """Two clients behind the proxy are two buckets (not one, the proxy's), and an X-Forwarded-For a client
    writes itself does not buy it a new one: eco-outbox keys on the address nginx appends."""
    site = await hostname(rate_limit_per_s=0.001, rate_limit_burst=2.0)
    assert await post_signals(site.url, "127.0.0.2", count=3) == [202, 202, 429]
    assert await post_signals(site.url, "127.0.0.2", forwarded_for="203.0.113.7") == [429]
    assert await post_signals(site.url, "127.0.0.3") == [202]
