"""The ECO production app works unchanged: a client written here that behaves as its feedback.ts,
moduleUsage.ts, passiveSignals.ts and health.ts do (tests/eco_client/production.js) runs in headless Chromium
from a page served on http://localhost:5173, one of the app's default origins (Chromium maps that host and
port to the page's server, which listens on a free port), against the service on another origin. It streams
a chat, then makes every call the app makes after a reply; every call succeeds and every row lands in the
target exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Route

from service.app import create_app
from service.config import Config
from tests.browser import UI_TIMEOUT_MS, chromium, served_at, track_errors
from tests.helpers import fetch, scalar, wait_for

CLIENT_DIR = Path(__file__).parent / "eco_client"
APP_ORIGIN = "http://localhost:5173"
PROMPT = "Olá, ECO! Hoje foi um dia difícil."
PASSIVE = ["copy", "time_on_message", "view"]


@pytest.fixture
async def app_page_server(aiohttp_server: Any) -> Any:
    """The page and its script, as the app's dev server would serve them."""

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(CLIENT_DIR / "production.html")

    async def script(request: web.Request) -> web.FileResponse:
        return web.FileResponse(CLIENT_DIR / "production.js")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/production.js", script)
    return await aiohttp_server(app)


async def target_rows(db: Any, iid: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "signals": await fetch(
            db,
            "select signal, meta from analytics.eco_passive_signals"
            " where interaction_id = %s and meta->>'type' = 'passive' order by signal",
            (iid,),
        ),
        "module_usages": await fetch(
            db,
            "select module_key, position from analytics.eco_module_usages where interaction_id = %s",
            (iid,),
        ),
        "feedback": await fetch(
            db,
            "select vote::text, reason, arm, pillar, message_id, session_id from analytics.eco_feedback"
            " where interaction_id = %s",
            (iid,),
        ),
        "rewards": await fetch(
            db,
            "select response_id, arm, recompensa from analytics.bandit_rewards where interaction_id = %s",
            (iid,),
        ),
    }


async def test_the_production_app_lands_every_call_once(
    make_config: Callable[..., Config], aiohttp_server: Any, app_page_server: Any, db: Any
) -> None:
    # The default origins, as a deployment has them: the app's dev server is one.
    server = await aiohttp_server(create_app(make_config()))
    api = str(server.make_url("")).rstrip("/")
    page_address = f"{app_page_server.host}:{app_page_server.port}"
    async with chromium(served_at(APP_ORIGIN.removeprefix("http://"), page_address)) as browser:
        await converse_in(browser, api, db)


async def converse_in(browser: Browser, api: str, db: Any) -> None:
    page = await (await browser.new_context()).new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors = track_errors(page)

    # The first feedback POST meets a network error: the app retries once, and the vote lands once.
    feedback_posts: list[str] = []

    async def drop_the_first_feedback(route: Route) -> None:
        if route.request.method == "POST":
            feedback_posts.append(route.request.post_data or "")
            if len(feedback_posts) == 1:
                await route.abort("connectionreset")
                return
        await route.continue_()

    await page.route(f"{api}/api/feedback", drop_the_first_feedback)
    await page.goto(f"{APP_ORIGIN}/")
    assert await page.evaluate("location.origin") == APP_ORIGIN

    result = await page.evaluate("([base, prompt]) => window.ecoApp.converse(base, prompt)", [api, PROMPT])
    iid, local_id = result["interactionId"], result["localId"]
    assert uuid.UUID(iid) and local_id.startswith("eco-")
    assert result["modules"] == [{"moduleKey": "offline", "position": 1}]
    assert result["feedback"] == {"ok": True, "status": 204}
    assert result["debounced"] is True and result["health"] == "ok"

    # The queue flushes 2 s after the first signal: the view, still under the local id, in its own POST;
    # the copy and the reading time under the real id, as one {"events": [...]}.
    await page.wait_for_function("window.ecoLog.filter((e) => e.kind === 'signal').length >= 2")
    calls = await page.evaluate("window.ecoLog")
    signal_posts = [(c["interactionId"], c["signals"], c["status"]) for c in calls if c["kind"] == "signal"]
    assert signal_posts == [(local_id, ["view"], 202), (iid, ["copy", "time_on_message"], 202)]
    assert [c["status"] for c in calls if c["kind"] == "ask"] == [200]
    assert [(c["status"], c["ok"]) for c in calls if c["kind"] == "module-usage"] == [(204, True)]
    assert [(c["status"], c["attempts"]) for c in calls if c["kind"] == "feedback"] == [(204, 2)]
    assert [(c["status"], c["health"]) for c in calls if c["kind"] == "health"] == [(200, "ok")]
    # Debounced: the like was never sent, only the dislike (twice: the dropped POST and its retry).
    assert len(feedback_posts) == 2 and all('"vote":"down"' in body for body in feedback_posts)

    # Every row in the target, and every outbox row delivered, none pending or dead: then each row is there
    # exactly once.
    await wait_for(
        lambda: target_rows(db, iid),
        lambda rows: len(rows["signals"]) >= len(PASSIVE) and rows["feedback"] and rows["module_usages"],
    )
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda pending: pending == 0,
    )
    rows = await target_rows(db, iid)
    assert [name for name, _ in rows["signals"]] == PASSIVE
    meta = {name: meta for name, meta in rows["signals"]}
    assert meta["copy"]["message_id"] == local_id and meta["time_on_message"]["value"] == 4200
    assert meta["view"]["guest_id_header"] == meta["copy"]["guest_id_header"]
    assert rows["module_usages"] == [("offline", 1)]
    [(vote, reason, arm, pillar, message_id, session_id)] = rows["feedback"]
    assert (vote, reason, arm, pillar, message_id) == ("down", ["too_long"], "offline", "geral", local_id)
    assert session_id == meta["copy"]["session_id"]
    assert [(arm, float(reward)) for _, arm, reward in rows["rewards"]] == [("offline", -1.0)]
    arms = await fetch(
        db, "select pulls, alpha, beta from analytics.eco_bandit_arms where arm_key = 'offline'"
    )
    assert arms == [(1, 1.0, 2.0)]
    # The one error the page saw is the POST dropped on purpose.
    assert errors == ["console: Failed to load resource: net::ERR_CONNECTION_RESET"]
