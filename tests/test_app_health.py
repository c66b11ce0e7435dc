"""The ECO web app's health checks: GET /api/health in the ECO backend's shape, ready exactly when /readyz
is (503 with the reason when not), and GET /health as text `ok`; both through CORS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient

from service.keys import RELAY
from tests.helpers import wait_for

APP = {"Origin": "https://ecofrontend888.vercel.app", "Accept": "text/plain, application/json;q=0.8"}


async def test_api_health_when_ready_counts_the_service_up(client: TestClient) -> None:
    await wait_for(lambda: client.get("/readyz"), lambda resp: resp.status == 200)
    resp = await client.get("/api/health", headers=APP)
    # What src/utils/health.ts checks: a 2xx whose JSON has a truthy `ok`.
    assert resp.status == 200
    answer = await resp.json()
    assert answer["ok"] is True
    # The offline responder names one module, itself, in every `done`.
    assert answer["prompts"] == "ready" and answer["modulesIndexed"] == 1 and answer["roots"] == []
    assert answer["responder"] == "offline"
    checked_at = datetime.fromisoformat(answer["checkedAt"])
    assert abs(datetime.now(UTC) - checked_at) < timedelta(minutes=1)
    assert resp.headers["Access-Control-Allow-Origin"] == APP["Origin"]
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


async def test_api_health_when_not_ready_gives_readyzs_reason(client: TestClient) -> None:
    await client.app[RELAY].stop()
    ready = await (await client.get("/readyz")).json()
    resp = await client.get("/api/health", headers=APP)
    assert resp.status == 503
    assert await resp.json() == {"ok": False, "reason": "; ".join(ready["problems"])}
    assert "relay not running" in ready["problems"]
    assert resp.headers["Access-Control-Allow-Origin"] == APP["Origin"]


async def test_health_is_text_ok(client: TestClient) -> None:
    await client.app[RELAY].stop()
    resp = await client.get("/health", headers=APP)
    # Liveness: the process answers, ready or not.
    assert resp.status == 200 and await resp.text() == "ok"
    assert resp.content_type == "text/plain"
    assert resp.headers["Access-Control-Allow-Origin"] == APP["Origin"]
    head = await client.head("/health", headers=APP)
    assert head.status == 200
