"""The ECO web app's ways in, in headless Chromium: the page's own EventSource on GET /api/ask-eco, and a JS
client that behaves as the app does (tests/eco_client/client.js) served from another origin, whose three
lifecycle signals, posted with credentials, land in the target exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from service.app import create_app
from service.config import Config
from tests.browser import UI_TIMEOUT_MS, track_errors
from tests.helpers import OUTBOX_ROWS, fetch, scalar, wait_for

CLIENT_DIR = Path(__file__).parent / "eco_client"
PROMPT = "Olá, ECO! Estou ansiosa hoje."
LIFECYCLE = ["first_token", "done", "view"]


async def open_page(browser: Browser, url: str) -> tuple[Page, list[str]]:
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors = track_errors(page)
    await page.goto(url)
    return page, errors


EVENT_SOURCE = """
(url) => new Promise((resolve, reject) => {
  const source = new EventSource(url);
  const seen = [];
  const names = ["prompt_ready", "first_token", "chunk", "latency", "done"];
  for (const name of names) {
    source.addEventListener(name, (event) => {
      const data = JSON.parse(event.data);
      seen.push({ name, data });
      // EventSource reconnects when a stream ends: closed at `done`, as a page would.
      if (name === "done") { source.close(); resolve(seen); }
    });
  }
  source.onerror = () => { source.close(); reject(new Error("EventSource failed after " + seen.length)); };
})
"""


async def test_page_event_source_streams_from_get(
    browser: Browser, make_config: Callable[..., Config], aiohttp_server: Any, db: Any
) -> None:
    server = await aiohttp_server(create_app(make_config()))
    page, errors = await open_page(browser, str(server.make_url("/")))
    query = f"texto={PROMPT}&client_message_id=es-{uuid.uuid4()}"
    events = await page.evaluate(EVENT_SOURCE, f"/api/ask-eco?{query}")
    names = [event["name"] for event in events]
    assert names[0] == "prompt_ready" and names[-2:] == ["latency", "done"], names
    assert "chunk" in names
    iid = events[-1]["data"]["meta"]["interaction_id"]
    assert events[0]["data"]["interaction_id"] == iid
    content = "".join(event["data"]["delta"] for event in events if event["name"] == "chunk")
    assert events[-1]["data"]["content"] == content
    assert errors == []
    assert await scalar(db, f"select count(*) from {OUTBOX_ROWS} where kind = 'interaction'") == 1


@pytest.fixture
async def client_origin(aiohttp_server: Any) -> str:
    """The JS client's page, served by a second server on another port: another origin."""

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(CLIENT_DIR / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_static("/static/", CLIENT_DIR)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def passive_signals(db: Any, iid: str) -> list[tuple[Any, ...]]:
    return await fetch(
        db,
        "select signal, meta from analytics.eco_passive_signals"
        " where interaction_id = %s and meta->>'type' = 'passive' order by signal",
        (iid,),
    )


async def test_an_app_like_client_from_another_origin(
    browser: Browser,
    make_config: Callable[..., Config],
    aiohttp_server: Any,
    client_origin: str,
    db: Any,
) -> None:
    server = await aiohttp_server(create_app(make_config(cors_origins=(client_origin,))))
    api = str(server.make_url("")).rstrip("/")
    assert api != client_origin
    page, errors = await open_page(browser, f"{client_origin}/")
    result = await page.evaluate(
        "([base, prompt]) => window.askEco(base, prompt, 'token-abc')", [api, PROMPT]
    )
    assert result["events"][0] == "prompt_ready" and result["events"][-1] == "done", result
    assert result["statuses"] == [202, 202, 202], result
    iid = result["interactionId"]
    assert uuid.UUID(iid) and uuid.UUID(result["guestId"]).version == 4
    rows = await wait_for(lambda: passive_signals(db, iid), lambda rows: len(rows) >= len(LIFECYCLE))
    # Exactly once: every outbox row is delivered, and each signal is in the target once.
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda pending: pending == 0,
    )
    rows = await passive_signals(db, iid)
    assert sorted(name for name, _ in rows) == sorted(LIFECYCLE)
    for _, meta in rows:
        assert meta["session_id"] == result["sessionId"] == meta["session_id_header"]
        assert meta["guest_id_header"] == result["guestId"]
    interaction = await fetch(
        db, "select user_id, meta from analytics.eco_interactions where id = %s", (iid,)
    )
    user_id, meta = interaction[0]
    assert user_id is None and meta["isGuest"] is True and meta["sessionMeta"] == {"origin": client_origin}
    assert errors == []
