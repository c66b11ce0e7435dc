"""GET /api/openapi.json: a valid OpenAPI 3.1 document that names every route of the app, and the live
answers of every endpoint (2xx and 4xx, JSON and SSE) conform to it, checked by openapi-core."""

from __future__ import annotations

import configparser
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema.validators import Draft202012Validator
from openapi_core import Config as OpenAPIConfig
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.app import create_app
from service.chat.schemas import ALIASES
from service.config import Config, Limits
from service.http.openapi import OPERATIONS, openapi_document
from service.keys import RELAY
from tests.conftest import TEST_RELAY
from tests.helpers import wait_for

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SPEC_URI = "urn:eco-outbox:openapi"
ASK_BODY_BYTES = 16 * 1024
MISSING_INTERACTION = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def doc_client(make_config: Callable[..., Config], aiohttp_client: Any) -> TestClient:
    # One attempt: a signal whose interaction never comes is dead at once, so /dead has something to list.
    # A small body limit, so that the 413 needs no large body.
    limits = replace(Limits(), ask_body_bytes=ASK_BODY_BYTES)
    config = make_config(admin_token=ADMIN_TOKEN, relay=replace(TEST_RELAY, max_attempts=1), limits=limits)
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def document(doc_client: TestClient) -> dict[str, Any]:
    resp = await doc_client.get("/api/openapi.json")
    assert resp.status == 200
    return await resp.json()


class Checker:
    """Sends a request, and holds the request (when valid) and the answer to the document."""

    def __init__(self, client: TestClient, document: dict[str, Any]) -> None:
        self.client = client
        # The SSE body is checked as text here, and event by event against x-sse-events below.
        text = OpenAPIConfig(extra_media_type_deserializers={"text/event-stream": lambda raw: raw.decode()})
        self.openapi = OpenAPI.from_dict(document, config=text)
        self.checked: set[tuple[str, str, int]] = set()

    async def call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        valid_request: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(headers or {})
        body = raw if raw is not None else (json.dumps(json_body).encode() if json_body is not None else None)
        if body is not None:
            headers.setdefault("Content-Type", content_type)
        resp = await self.client.request(method, url, data=body, headers=headers)
        data = await resp.read()
        parts = urlsplit(url)
        query = dict(pair.split("=", 1) for pair in parts.query.split("&") if pair)
        request = MockRequest(
            "http://localhost",
            method,
            parts.path,
            args=query,
            headers=headers,
            data=body,
            content_type=headers.get("Content-Type", "application/json").split(";")[0],
        )
        if valid_request:
            self.openapi.validate_request(request)
        response = MockResponse(data, resp.status, headers=dict(resp.headers), content_type=resp.content_type)
        self.openapi.validate_response(request, response)
        self.checked.add((method.lower(), parts.path, resp.status))
        return resp.status, dict(resp.headers), data


def event_validator(document: dict[str, Any], ref: str) -> Draft202012Validator:
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource(SPEC_URI, resource)
    return Draft202012Validator(
        {"$ref": SPEC_URI + ref}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


async def test_document_is_valid_and_covers_every_route(
    doc_client: TestClient, document: dict[str, Any]
) -> None:
    validate_spec(document)
    assert document["openapi"].startswith("3.1")
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in doc_client.app.router.routes()
        if route.method not in ("HEAD", "OPTIONS", "*")
        and route.resource is not None
        and not route.resource.canonical.startswith("/static")
    }
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert routes == documented
    for path in (
        "/api/ask-eco",
        "/api/signal",
        "/api/interactions/{interaction_id}/signals",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/admin/outbox/stats",
        "/api/admin/outbox/dead",
        "/api/admin/outbox/requeue",
    ):
        assert path in document["paths"], path
    signal = document["components"]["schemas"]["Signal"]
    # Liberal intake: unknown fields are ignored, so the document must not forbid them.
    assert signal.get("additionalProperties", True) is not False
    assert {"interaction_id", "interactionId", "name", "signal", "meta", "signal_id", "session_id"} <= set(
        signal["properties"]
    )
    ask = document["components"]["schemas"]["Ask"]
    assert ask.get("additionalProperties", True) is not False
    assert {"texto", "mensagens", "clientMessageId", "usuario_id", "isGuest", "sessionMeta"} <= set(
        ask["properties"]
    )
    assert "get" in document["paths"]["/api/ask-eco"]


async def test_ask_eco_answers_conform(doc_client: TestClient, document: dict[str, Any]) -> None:
    check = Checker(doc_client, document)
    status, headers, body = await check.call("POST", "/api/ask-eco", json_body={"message": "Olá"})
    assert status == 200 and json.loads(body)["meta"]["finishReason"] == "stop"

    sse = {"Accept": "text/event-stream", "X-Eco-Client-Message-Id": "m-1"}
    status, headers, body = await check.call(
        "POST", "/api/ask-eco", json_body={"message": "Olá"}, headers=sse
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    described = document["paths"]["/api/ask-eco"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    events = _parse_sse(body)
    assert [name for name, _ in events][:2] == ["prompt_ready", "first_token"]
    for name, data in events:
        event_validator(document, described["x-sse-events"][name]["$ref"]).validate(data)

    status, *_ = await check.call("POST", "/api/ask-eco", json_body={"message": "Olá"}, headers=sse)
    assert status == 409

    app_body = {
        "mensagens": [{"role": "user", "text": "Olá", "id": "m-2"}],
        "clientMessageId": "m-2",
        "usuario_id": "not-a-uuid",
        "isGuest": True,
        "sessionMeta": {"device": "web"},
        "clientHour": 9,
        "stream": "true",
        "unknown": [1],
    }
    status, headers, body = await check.call("POST", "/api/ask-eco", json_body=app_body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    status, headers, body = await check.call("GET", "/api/ask-eco?texto=Ol%C3%A1&client_message_id=m-3")
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    described = document["paths"]["/api/ask-eco"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    for name, data in _parse_sse(body):
        event_validator(document, described["x-sse-events"][name]["$ref"]).validate(data)
    status, *_ = await check.call("GET", "/api/ask-eco?payload=%5B1%5D", valid_request=False)
    assert status == 422
    for raw, content_type, expected in (
        (b"{nope", "application/json", 400),
        (b'{"message": "x"}', "text/plain", 415),
        (b'{"message": "' + b"x" * ASK_BODY_BYTES + b'"}', "application/json", 413),
        (b'{"message": "  "}', "application/json", 422),
    ):
        status, *_ = await check.call(
            "POST", "/api/ask-eco", raw=raw, content_type=content_type, valid_request=False
        )
        assert status == expected


def _parse_sse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if "data" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_signal_and_status_answers_conform(doc_client: TestClient, document: dict[str, Any]) -> None:
    check = Checker(doc_client, document)
    resp = await doc_client.post("/api/ask-eco", json={"message": "Olá"})
    iid = (await resp.json())["interaction_id"]

    one = {"interaction_id": iid, "name": "view", "meta": {"a": 1}, "value": 1.5}
    status, _, body = await check.call("POST", "/api/signal", json_body=one)
    assert status == 202 and json.loads(body)["status"] == "queued"
    batch = [{"interaction_id": iid, "signal": "copy"}, {"interaction_id": iid, "name": "done"}]
    status, _, body = await check.call("POST", "/api/signal", json_body=batch)
    assert status == 202 and len(json.loads(body)) == 2
    beacon = json.dumps({"interaction_id": iid, "name": "page_hidden"}).encode()
    # A beacon's JSON travels as text/plain, which a validator reads as a string: only the answer is checked.
    status, *_ = await check.call(
        "POST", "/api/signal", raw=beacon, content_type="text/plain", valid_request=False
    )
    assert status == 202
    status, *_ = await check.call(
        "POST", "/api/signal", json_body={"name": "view"}, headers={"X-Eco-Interaction-Id": iid}
    )
    assert status == 202
    status, *_ = await check.call(
        "POST", "/api/signal", json_body={"interaction_id": "nope", "name": "x"}, valid_request=False
    )
    assert status == 422
    # The production app's path and batch shape.
    status, _, body = await check.call("POST", "/signal", json_body={"events": batch})
    assert status == 202 and len(json.loads(body)) == 2
    status, _, body = await check.call("POST", "/signal", json_body=one)
    assert status == 202 and json.loads(body)["status"] == "queued"

    status, _, body = await check.call("GET", f"/api/interactions/{iid}/signals")
    assert status == 200 and {s["name"] for s in json.loads(body)["signals"]} >= {"view", "copy", "done"}
    status, *_ = await check.call("GET", f"/api/interactions/{MISSING_INTERACTION}/signals")
    assert status == 404
    status, *_ = await check.call("GET", "/api/interactions/not-a-uuid/signals", valid_request=False)
    assert status == 422


async def test_operations_and_admin_answers_conform(doc_client: TestClient, document: dict[str, Any]) -> None:
    check = Checker(doc_client, document)
    await wait_for(lambda: doc_client.get("/readyz"), lambda resp: resp.status == 200)
    for path in ("/healthz", "/readyz", "/health", "/api/health", "/metrics", "/api/openapi.json", "/"):
        status, *_ = await check.call("GET", path)
        assert status == 200, path

    status, *_ = await check.call("GET", "/api/admin/outbox/stats", valid_request=False)
    assert status == 401
    status, *_ = await check.call("GET", "/api/admin/outbox/stats", headers={"Authorization": "Bearer wrong"})
    assert status == 403

    # A signal whose interaction never comes: with one attempt allowed, it is dead at once.
    await doc_client.post("/api/signal", json={"interaction_id": MISSING_INTERACTION, "name": "orphan"})

    async def dead_total() -> int:
        resp = await doc_client.get("/api/admin/outbox/stats", headers=ADMIN)
        return (await resp.json())["dead_total"]

    await wait_for(dead_total, lambda total: total >= 1)
    status, _, body = await check.call("GET", "/api/admin/outbox/stats", headers=ADMIN)
    assert status == 200 and json.loads(body)["dead"]["signal"]["rows"] == 1
    status, _, body = await check.call("GET", "/api/admin/outbox/dead?limit=10", headers=ADMIN)
    assert status == 200
    [letter] = json.loads(body)["items"]
    status, *_ = await check.call("GET", "/api/admin/outbox/dead?limit=0", headers=ADMIN, valid_request=False)
    assert status == 422
    status, _, body = await check.call(
        "POST", "/api/admin/outbox/requeue", json_body={"seqs": [letter["seq"]]}, headers=ADMIN
    )
    assert status == 200 and json.loads(body)["requeued"] == [letter["seq"]]
    status, *_ = await check.call(
        "POST", "/api/admin/outbox/requeue", json_body={}, headers=ADMIN, valid_request=False
    )
    assert status == 422
    status, _, body = await check.call(
        "POST", "/api/admin/outbox/purge-dead", json_body={"older_than_s": 3600}, headers=ADMIN
    )
    assert status == 200 and json.loads(body)["purged"] == 0


async def test_api_health_when_not_ready_conforms(doc_client: TestClient, document: dict[str, Any]) -> None:
    check = Checker(doc_client, document)
    await doc_client.app[RELAY].stop()
    status, _, body = await check.call("GET", "/api/health")
    assert status == 503 and "relay not running" in json.loads(body)["reason"]


async def test_admin_page_and_relay_state_conform(doc_client: TestClient, document: dict[str, Any]) -> None:
    check = Checker(doc_client, document)
    status, *_ = await check.call("GET", "/admin")
    assert status == 200
    status, *_ = await check.call("GET", "/api/admin/relay", valid_request=False)
    assert status == 401
    await doc_client.post("/api/signal", json={"interaction_id": MISSING_INTERACTION, "name": "orphan"})

    async def relay_state() -> dict[str, Any]:
        return await (await doc_client.get("/api/admin/relay", headers=ADMIN)).json()

    await wait_for(relay_state, lambda state: state["last_batch"] is not None)
    status, _, body = await check.call("GET", "/api/admin/relay", headers=ADMIN)
    assert status == 200 and json.loads(body)["running"] is True


def test_the_version_is_the_package_version(document: dict[str, Any]) -> None:
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg", encoding="utf-8")
    assert document["info"]["version"] == setup["metadata"]["version"]


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def test_every_description_has_its_route_and_every_route_its_description(doc_client: TestClient) -> None:
    names = {route.resource.name for route in doc_client.app.router.routes() if route.resource is not None}
    assert set(OPERATIONS) <= names, set(OPERATIONS) - names
    app = web.Application()
    app.router.add_get("/undescribed", _no_content)
    with pytest.raises(LookupError, match="GET /undescribed"):
        openapi_document(app.router, Limits())


@pytest.mark.parametrize("schema", sorted(ALIASES, key=lambda schema: schema.__name__))
def test_every_alias_is_in_the_document(document: dict[str, Any], schema: type) -> None:
    component = document["components"]["schemas"][schema.__name__.removesuffix("Schema")]
    for concept, names in ALIASES[schema].items():
        order = ", ".join(f"`{name}`" for name in names)
        assert f"given as {order}: the first given wins" in component["properties"][concept]["description"]
        for name in set(names) - {concept}:
            assert component["properties"][name]["description"] == f"another name for `{concept}`"
