"""The demo page at `/`, end to end in headless Chromium (Debian's, driven by Playwright): the reply streams
in, the interaction id is shown, the page's signals (the sendBeacon one on page hide included) reach
analytics.eco_passive_signals, and the page shows them delivered, live from the status endpoint."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from service.app import create_app
from service.chat.responder import OfflineResponder
from service.config import Config
from tests.browser import UI_TIMEOUT_MS, track_errors
from tests.helpers import fetch, wait_for

PAGE_SIGNALS = {"view", "first_token", "done", "copy"}
PROMPT = "Olá, ECO! Como posso lidar com a ansiedade?"


@pytest.fixture
async def page_url(make_config: Callable[..., Config], aiohttp_server: Any) -> str:
    """The app on a real port of 127.0.0.1, with chunks paced so that the reply visibly streams."""
    server = await aiohttp_server(create_app(make_config(offline_chunk_delay_ms=20.0)))
    return str(server.make_url("/"))


async def page_signals(db: Any, iid: str) -> dict[str, dict[str, Any]]:
    rows = await fetch(
        db,
        "select signal, meta from analytics.eco_passive_signals"
        " where interaction_id = %s and meta->>'source' = 'demo-page'",
        (iid,),
    )
    return {name: meta for name, meta in rows}


async def test_page_streams_the_reply_and_its_signals_land(browser: Browser, page_url: str, db: Any) -> None:
    context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    errors = track_errors(page)
    await page.goto(page_url)
    await expect(page.locator("h1")).to_contain_text("ECO")

    await page.fill("#message", PROMPT)
    await page.click("#send")
    await expect(page.locator("#status")).to_have_text("done", timeout=UI_TIMEOUT_MS)
    assert await page.inner_text("#reply") == OfflineResponder().reply_for(PROMPT)

    iid = await page.inner_text("#interaction-id")
    assert str(uuid.UUID(iid)) == iid
    assert await page.inner_text("#finish") != "—"
    guest_id = await page.evaluate("localStorage.getItem('eco.guestId')")

    await page.click("#copy")
    assert await page.evaluate("navigator.clipboard.readText()") == OfflineResponder().reply_for(PROMPT)

    # Live on the page: its four signals delivered (the relay wrote them to the target), and the server's own.
    delivered = page.locator("#signals tr[data-from='page'][data-state='delivered']")
    await expect(delivered).to_have_count(len(PAGE_SIGNALS), timeout=UI_TIMEOUT_MS)
    shown = {await row.get_attribute("data-name") for row in await delivered.all()}
    assert shown == PAGE_SIGNALS
    server_rows = page.locator("#signals tr[data-from='server'][data-state='delivered']")
    await expect(server_rows).to_have_count(3, timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#signals-summary")).to_have_text("7 of 7 delivered")

    landed = await page_signals(db, iid)
    assert set(landed) == PAGE_SIGNALS
    for meta in landed.values():
        assert meta["type"] == "passive"
        assert meta["guest_id_header"] == guest_id
    assert landed["first_token"]["value"] >= 0
    assert landed["copy"]["clipboard"] is True
    assert landed["done"]["finish_reason"] == "stop"

    # Leaving the page: pagehide (and visibilitychange) send the beacon, as text/plain, once.
    await page.goto("about:blank")
    landed = await wait_for(lambda: page_signals(db, iid), lambda signals: "page_hidden" in signals)
    beacon = landed["page_hidden"]
    assert beacon["reason"] in ("pagehide", "visibilitychange")
    assert beacon["guest_id"] == guest_id
    assert "guest_id_header" not in beacon, "a beacon carries no custom headers"
    count = await fetch(
        db,
        "select count(*) from analytics.eco_passive_signals"
        " where interaction_id = %s and signal = 'page_hidden'",
        (iid,),
    )
    assert count == [(1,)]
    interaction = await fetch(
        db, "select meta->>'finish_reason' from analytics.eco_interactions where id = %s", (iid,)
    )
    assert interaction == [("stop",)]
    assert errors == []
    await context.close()


async def test_page_shows_an_error_answer(browser: Browser, page_url: str) -> None:
    """A 4xx from ask-eco is shown, not swallowed (a message longer than the limit is a 422)."""
    page = await browser.new_page()
    await page.goto(page_url)
    await page.evaluate("document.getElementById('message').value = 'x'.repeat(20000)")
    await page.click("#send")
    await expect(page.locator("#status")).to_have_text("failed", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#error")).to_contain_text("HTTP 422")
    assert await page.inner_text("#interaction-id") == "—"
