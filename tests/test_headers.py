"""Headers are client input: raw header bytes that are not UTF-8, controls, over-long values and ids that are
not uuids are a 4xx on every route, never a 5xx, and never a traceback in the log.

The requests go over a raw socket: an HTTP client library would refuse (or re-encode) the bytes under test.
aiohttp decodes a header's bytes with `surrogateescape`, so a 0xff byte reaches the service as a lone
surrogate, which psycopg2 cannot encode: before service/headers.py, a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger

from service.app import create_app
from service.config import Config
from service.http.headers import IDENTITY_HEADERS
from service.runtime.logs import _human_format

TOKEN = "admin-secret"
IID = str(uuid.uuid4())
# A valid body for each route that takes one, so that only the header under test can make it fail.
BODIES: dict[str, dict[str, Any]] = {
    "/api/ask-eco": {"message": "Olá", "stream": False},
    "/api/signal": {"interaction_id": IID, "name": "view"},
    "/api/admin/outbox/requeue": {"all": True},
    "/api/admin/outbox/purge-dead": {"older_than_s": 1e9},
}
# Every route of the app, static files included; the dynamic one with an id filled in.
ROUTES: list[tuple[str, str]] = []


def app_routes(app: web.Application) -> list[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "*" or not path:
            continue
        path = path.replace("{interaction_id}", IID)
        if path.startswith("/static"):
            path = "/static/app.js"
        routes.add((route.method, path))
    return sorted(routes)


ROUTES = app_routes(create_app(Config()))
HEADER_NAMES = sorted(IDENTITY_HEADERS)


def request_bytes(method: str, path: str, name: str, value: bytes) -> bytes:
    body = json.dumps(BODIES[path]).encode() if method == "POST" and path in BODIES else b""
    lines = [
        f"{method} {path} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
    ]
    if name != "Authorization":
        lines.append(f"Authorization: Bearer {TOKEN}".encode())
    lines.append(name.encode() + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send_raw(server: TestServer, payload: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(payload)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


@pytest.fixture
async def server(make_config: Callable[..., Config], aiohttp_server: Any) -> TestServer:
    """The app on a real port, admin on, no rate limit (every example must reach the header check)."""
    return await aiohttp_server(create_app(make_config(admin_token=TOKEN, rate_limit_per_s=0.0)))


@pytest.fixture
def log_problems() -> Iterator[list[str]]:
    """Records at ERROR and above or with a traceback, formatted as the service formats its lines; a
    format that breaks on a value would show up as a loguru handler error on stderr, checked by the tests."""
    problems: list[str] = []

    def sink(message: Any) -> None:
        record = message.record
        if record["exception"] is not None or record["level"].no >= logger.level("ERROR").no:
            problems.append(str(message))

    handler = logger.add(sink, level="DEBUG", format=_human_format, colorize=False, catch=True)
    yield problems
    logger.remove(handler)


NOT_UTF8 = [b"\xff", b"guest-\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc"]
BAD_VALUES: list[tuple[str, str, bytes]] = [
    # The six places that gave a 500 (issue 11): not UTF-8.
    *(
        ("POST", "/api/ask-eco", name)
        for name in ("X-Eco-Guest-Id", "X-Eco-Session-Id", "X-Eco-Client-Message-Id")
    ),
    *(("POST", "/api/signal", name) for name in ("X-Eco-Guest-Id", "X-Eco-Session-Id")),
    ("GET", "/api/admin/outbox/stats", "Authorization"),
]


@pytest.mark.parametrize("value", NOT_UTF8, ids=[v.hex() for v in NOT_UTF8])
@pytest.mark.parametrize(("method", "path", "name"), BAD_VALUES, ids=["-".join(c[1:]) for c in BAD_VALUES])
async def test_header_bytes_that_are_not_utf8_are_a_422(
    server: TestServer,
    log_problems: list[str],
    method: str,
    path: str,
    name: str,
    value: bytes,
    capfd: Any,
    caplog: Any,
) -> None:
    status, rest = await send_raw(server, request_bytes(method, path, name, value))
    assert status == 422, rest
    document = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert document["error"] == "validation_failed"
    assert name in document["details"]
    assert log_problems == []
    assert "Traceback" not in capfd.readouterr().err
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


LIMIT_CASES: list[tuple[str, bytes, int]] = [
    ("X-Eco-Session-Id", b"s" * 256, 200),
    ("X-Eco-Session-Id", b"s" * 257, 422),
    ("X-Eco-Guest-Id", b"g" * 257, 422),
    ("X-Eco-Guest-Id", "convidado-ç".encode(), 200),
    ("X-Eco-Client-Message-Id", b"m" * 128, 200),
    ("X-Eco-Client-Message-Id", b"m" * 129, 422),
    # aiohttp's own parser refuses a control character before the app sees it.
    ("X-Eco-Client-Message-Id", b"a\x01b", 400),
    ("X-Eco-Interaction-Id", b"not-a-uuid", 422),
    ("X-Eco-User-Id", b"not-a-uuid", 200),
]


@pytest.mark.parametrize(
    ("name", "value", "status"), LIMIT_CASES, ids=[f"{n}-{len(v)}" for n, v, _ in LIMIT_CASES]
)
async def test_header_caps_on_ask_eco(server: TestServer, name: str, value: bytes, status: int) -> None:
    answer, rest = await send_raw(server, request_bytes("POST", "/api/ask-eco", name, value))
    assert answer == status, rest


async def test_admin_authorization_still_works(server: TestServer) -> None:
    ok, _ = await send_raw(
        server, request_bytes("GET", "/api/admin/outbox/stats", "Authorization", b"Bearer " + TOKEN.encode())
    )
    wrong, _ = await send_raw(
        server, request_bytes("GET", "/api/admin/outbox/stats", "Authorization", "Bearer çç".encode())
    )
    assert (ok, wrong) == (200, 403)


header_values = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(NOT_UTF8),
    st.builds(lambda text, junk: text.encode() + junk, st.text(max_size=20), st.binary(max_size=4)),
    st.builds(lambda n: b"x" * n, st.integers(200, 6000)),
    st.sampled_from([b"{x}{time}", b"<red>x</red>", b"%s%d", b"\x00", str(uuid.uuid4()).encode()]),
).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=st.sampled_from(ROUTES), name=st.sampled_from(HEADER_NAMES), value=header_values)
async def test_raw_header_bytes_never_a_5xx_on_any_route(
    server: TestServer,
    log_problems: list[str],
    capfd: Any,
    caplog: Any,
    route: tuple[str, str],
    name: str,
    value: bytes,
) -> None:
    method, path = route
    status, rest = await send_raw(server, request_bytes(method, path, name, value))
    assert status < 500, (status, rest[:500])
    assert b"Traceback" not in rest
    assert log_problems == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
