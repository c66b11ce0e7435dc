"""CORS as the ECO backend had it, plus ours: every route the ECO production app calls passes its preflight
from the app's origin with exactly the headers it sends; the default and configured origins; and every error
answer to an allowed origin carries the CORS headers, so that the browser shows the status, not a CORS
failure."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiopg
import pytest
from aiohttp.test_utils import TestClient

from service.config import DEFAULT_CORS_ORIGINS, PROJECT_DIR, Config, Limits
from service.keys import RELAY

APP_ORIGIN = "https://ecofrontend888.vercel.app"
# The headers of the app's buildIdentityHeaders (src/lib/guestId.ts) that a preflight names: Content-Type
# (application/json is not a CORS-safelisted type), the ECO ids, X-Client-Id and the bias hint.
IDENTITY = ["content-type", "x-eco-guest-id", "x-eco-session-id", "x-client-id", "x-eco-bias-hint"]

# (method, path, the request headers the browser names in the preflight) for every call the app makes.
APP_CALLS: list[tuple[str, str, list[str]]] = [
    # src/api/ecoStream: the chat, streamed; Authorization for a signed-in user.
    ("POST", "/api/ask-eco", [*IDENTITY, "authorization", "x-eco-client-message-id"]),
    ("GET", "/api/ask-eco", [*IDENTITY, "authorization", "x-eco-client-message-id"]),
    # src/api/passiveSignals.ts (the production app) and the ECO backend's client.
    ("POST", "/signal", [*IDENTITY, "x-eco-interaction-id"]),
    ("POST", "/api/signal", [*IDENTITY, "x-eco-interaction-id"]),
    # src/api/feedback.ts adds X-Guest-Id for a guest; src/api/moduleUsage.ts sends the identity headers.
    ("POST", "/api/feedback", [*IDENTITY, "x-guest-id"]),
    ("POST", "/api/module-usage", IDENTITY),
    # src/utils/health.ts: only Accept, which is safelisted; a browser may still preflight when it is odd.
    ("GET", "/api/health", ["accept"]),
]


def preflight_headers(origin: str, method: str, headers: list[str]) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ",".join(headers),
    }


@pytest.mark.parametrize(("method", "path", "headers"), APP_CALLS, ids=[f"{m} {p}" for m, p, _ in APP_CALLS])
async def test_every_app_call_passes_its_preflight(
    client: TestClient, method: str, path: str, headers: list[str]
) -> None:
    resp = await client.options(path, headers=preflight_headers(APP_ORIGIN, method, headers))
    assert 200 <= resp.status < 300, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Allow-Methods"] == method
    assert resp.headers["Vary"] == "Origin"
    allowed = {name.strip().lower() for name in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == set(headers)


async def test_the_ecos_allowed_headers_and_methods_are_all_allowed(client: TestClient) -> None:
    """The ECO backend's whole list, ours beside it: a client that sends any of them is not refused."""
    eco = ["Content-Type", "Accept", "X-Eco-Client-Message-Id", "X-Eco-Guest-Id", "X-Eco-Session-Id"]
    eco += ["X-Eco-Bias-Hint", "X-Session-Id", "X-Guest-Id", "X-Client-Id", "Authorization"]
    eco += ["X-Requested-With", "X-Eco-Interaction-Id"]
    ours = ["Idempotency-Key", "Last-Event-Id", "X-Eco-User-Id", "X-Stream-Id"]
    for method in ("GET", "POST", "HEAD", "OPTIONS"):
        resp = await client.options("/api/ask-eco", headers=preflight_headers(APP_ORIGIN, method, eco + ours))
        assert resp.status == 200, (method, await resp.text())
    refused = await client.options("/api/ask-eco", headers=preflight_headers(APP_ORIGIN, "PUT", ["accept"]))
    assert refused.status == 403


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://ecofrontend888.vercel.app", True),
        ("https://eco-preview-42.vercel.app", True),
        ("http://localhost:5173", True),
        ("http://localhost:5174", True),
        ("http://localhost:4173", True),
        ("http://localhost:4174", True),
        # The ECO backend's pattern is one lowercase label over https.
        ("https://a.b.vercel.app", False),
        ("https://Eco.vercel.app", False),
        ("http://eco.vercel.app", False),
        ("https://vercel.app", False),
        ("https://evil.example/.vercel.app", False),
        ("https://eco.vercel.app.evil.example", False),
        ("http://localhost:3000", False),
        ("null", False),
        ("*", False),
    ],
)
async def test_the_default_origins_are_the_eco_backends(
    client: TestClient, origin: str, allowed: bool
) -> None:
    assert Config().cors_origins == DEFAULT_CORS_ORIGINS
    resp = await client.options("/signal", headers=preflight_headers(origin, "POST", ["content-type"]))
    assert (resp.status == 200) is allowed
    assert (resp.headers.get("Access-Control-Allow-Origin") == origin) is allowed


@pytest.mark.parametrize(
    ("env", "origins"),
    [
        ({}, DEFAULT_CORS_ORIGINS),
        ({"ECO_CORS_ORIGINS": ""}, ()),
        ({"ECO_CORS_ORIGINS": "https://eco.example"}, ("https://eco.example",)),
        # The ECO backend's variable adds to the defaults, or to ECO_CORS_ORIGINS; each entry once.
        (
            {"CORS_ALLOWLIST": "https://eco.example, https://*.eco.example,^https://eco-[0-9]+\\.example$"},
            (
                *DEFAULT_CORS_ORIGINS,
                "https://eco.example",
                "https://*.eco.example",
                "^https://eco-[0-9]+\\.example$",
            ),
        ),
        (
            {
                "ECO_CORS_ORIGINS": "https://eco.example",
                "CORS_ALLOWLIST": "https://eco.example,https://b.example",
            },
            ("https://eco.example", "https://b.example"),
        ),
    ],
)
def test_origins_from_the_environment(env: dict[str, str], origins: tuple[str, ...]) -> None:
    assert Config.from_env(env).cors_origins == origins


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://eco.example", True),
        ("https://a.eco.example", True),
        ("https://a.b.eco.example", True),
        ("https://eco-42.example", True),
        ("https://eco-x.example", False),
        ("https://eco-42.example.evil", False),
        ("https://evil.example", False),
        ("https://a.eco.example:8443", False),
    ],
)
async def test_cors_allowlist_entries_exact_wildcard_and_regex(
    make_client: Callable[..., Awaitable[TestClient]], origin: str, allowed: bool
) -> None:
    env = {
        "ECO_CORS_ORIGINS": "",
        "CORS_ALLOWLIST": "https://eco.example,https://*.eco.example,^https://eco-[0-9]+\\.example$",
    }
    client = await make_client(cors_origins=Config.from_env(env).cors_origins)
    resp = await client.options("/signal", headers=preflight_headers(origin, "POST", ["content-type"]))
    assert (resp.status == 200) is allowed
    assert (resp.headers.get("Access-Control-Allow-Origin") == origin) is allowed


async def test_patterns_alone_allow_their_origins(make_client: Callable[..., Awaitable[TestClient]]) -> None:
    """aiohttp-cors refuses every preflight when it sees no origin: patterns alone are origins too."""
    client = await make_client(cors_origins=("https://*.eco.example",))
    resp = await client.options("/signal", headers=preflight_headers("https://a.eco.example", "POST", []))
    assert resp.status == 200


@pytest.mark.parametrize(
    "env",
    [
        {"ECO_CORS_ORIGINS": "*"},
        {"ECO_CORS_ORIGINS": "https://eco.example, *"},
        {"CORS_ALLOWLIST": "*"},
        {"CORS_ALLOWLIST": "^https://(eco$"},
    ],
)
def test_a_credentialed_wildcard_or_a_broken_regex_is_refused_at_start(env: dict[str, str]) -> None:
    """One line on stderr naming the variable, exit status 2, no traceback; nothing starts."""
    environ = {
        key: value for key, value in os.environ.items() if key not in ("ECO_CORS_ORIGINS", "CORS_ALLOWLIST")
    }
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={**environ, **env, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("configuration refused: ")
    assert next(iter(env)) in lines[0]
    assert "Traceback" not in done.stderr


# Error answers ---

Request = Callable[[TestClient], Awaitable[Any]]
ORIGIN = {"Origin": APP_ORIGIN}
IID = str(uuid.uuid4())


async def _too_large(client: TestClient) -> Any:
    body = b'{"name": "view", "meta": {"x": "' + b"x" * (Limits().signal_body_bytes + 1) + b'"}}'
    return await client.post("/signal", data=body, headers={**ORIGIN, "Content-Type": "application/json"})


async def _rate_limited(client: TestClient) -> Any:
    body = {"signal": "view", "interaction_id": IID}
    while (resp := await client.post("/signal", json=body, headers=ORIGIN)).status != 429:
        assert resp.status == 202
    return resp


async def _not_ready(client: TestClient) -> Any:
    await client.app[RELAY].stop()
    return await client.get("/api/health", headers=ORIGIN)


# (name, what it sends, the status it answers)
ERRORS: list[tuple[str, Request, int]] = [
    ("unknown route", lambda c: c.get("/api/nowhere", headers=ORIGIN), 404),
    ("unknown route, POST", lambda c: c.post("/api/nowhere", json={}, headers=ORIGIN), 404),
    ("method not allowed", lambda c: c.get("/signal", headers=ORIGIN), 405),
    (
        "malformed JSON",
        lambda c: c.post("/signal", data=b"{", headers={**ORIGIN, "Content-Type": "application/json"}),
        400,
    ),
    ("body too large", _too_large, 413),
    (
        "wrong content type",
        lambda c: c.post("/signal", data=b"x", headers={**ORIGIN, "Content-Type": "image/png"}),
        415,
    ),
    ("invalid body", lambda c: c.post("/api/signal", json={"interaction_id": IID}, headers=ORIGIN), 422),
    (
        "invalid header",
        lambda c: c.post("/signal", json={}, headers={**ORIGIN, "X-Eco-Session-Id": "s" * 300}),
        422,
    ),
    ("invalid ask", lambda c: c.post("/api/ask-eco", json={"texto": " "}, headers=ORIGIN), 422),
    ("rate limited", _rate_limited, 429),
    ("not ready", _not_ready, 503),
]


@pytest.mark.parametrize(("name", "send", "status"), ERRORS, ids=[name for name, _, _ in ERRORS])
async def test_error_answers_to_an_allowed_origin_carry_cors(
    make_client: Callable[..., Awaitable[TestClient]], name: str, send: Request, status: int
) -> None:
    client = await make_client(rate_limit_per_s=0.01, rate_limit_burst=3.0)
    resp = await send(client)
    assert resp.status == status, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
    assert "Origin" in resp.headers["Vary"]
    body = await resp.json()
    assert body.get("error") or body.get("reason"), body


async def test_a_503_from_the_database_carries_cors(
    make_client: Callable[..., Awaitable[TestClient]], database_url: str
) -> None:
    client = await make_client(enqueue_timeout_s=0.3)
    async with aiopg.connect(database_url, enable_hstore=False) as conn, conn.cursor() as cur:
        await cur.execute("BEGIN; LOCK TABLE eco_outbox.events IN ACCESS EXCLUSIVE MODE")
        resp = await client.post("/signal", json={"signal": "view", "interaction_id": IID}, headers=ORIGIN)
        await cur.execute("ROLLBACK")
    assert resp.status == 503
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(("name", "send", "status"), ERRORS[:4], ids=[name for name, _, _ in ERRORS[:4]])
async def test_error_answers_to_another_origin_carry_none(
    make_client: Callable[..., Awaitable[TestClient]], name: str, send: Request, status: int
) -> None:
    client = await make_client(cors_origins=("https://eco.example",))
    resp = await send(client)
    assert resp.status == status
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_a_preflight_to_an_unknown_route_names_its_status(client: TestClient) -> None:
    """The browser then reports the 404 of the preflight, not a missing Access-Control-Allow-Origin."""
    resp = await client.options("/api/nowhere", headers=preflight_headers(APP_ORIGIN, "POST", IDENTITY))
    assert resp.status == 404
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


async def test_answers_that_depend_on_the_origin_vary_on_it(client: TestClient) -> None:
    """A cache must not hand one origin's answer to another, nor an answer without CORS to a browser."""
    for origin in ({"Origin": APP_ORIGIN}, {"Origin": "https://evil.example"}, {}):
        resp = await client.post("/signal", json={"signal": "view", "interaction_id": IID}, headers=origin)
        assert resp.status == 202 and resp.headers["Vary"] == "Origin"
    # Routes no browser calls answer alike for every origin.
    assert "Vary" not in (await client.get("/metrics", headers={"Origin": APP_ORIGIN})).headers
