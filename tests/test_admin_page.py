"""The admin page at /admin, end to end in headless Chromium against a real database: dead signals appear with
their reason, requeue (one, or a selection) delivers them once after the cause is fixed, purge removes the
rest, and a wrong token shows the 401/403 and no data. Also the relay-state endpoint the page draws from."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, Dialog, Page, expect

from outbox.activity import RelayActivity
from service.app import create_app
from service.config import Config
from tests.browser import UI_TIMEOUT_MS, track_errors
from tests.conftest import TEST_RELAY
from tests.helpers import fetch, insert_interaction, scalar, wait_for
from tests.test_admin import AUTH, TOKEN, dead_signal

TOKEN_KEY = "eco.adminToken"
DEAD_PAGE_ROWS = 50


@pytest.fixture
async def admin_server(make_config: Callable[..., Config], aiohttp_server: Any) -> TestServer:
    """Two attempts: a signal whose interaction never comes is dead within a second."""
    config = make_config(admin_token=TOKEN, relay=replace(TEST_RELAY, max_attempts=2))
    return await aiohttp_server(create_app(config))


@pytest.fixture
async def admin_client(admin_server: TestServer, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(admin_server)


class Dialogs:
    """Answers the page's confirmations (accept, or dismiss when told) and keeps their questions."""

    def __init__(self, page: Page) -> None:
        self.questions: list[str] = []
        self.accept = True
        page.on("dialog", self._answer)

    async def _answer(self, dialog: Dialog) -> None:
        self.questions.append(dialog.message)
        await (dialog.accept() if self.accept else dialog.dismiss())


async def sign_in(page: Page, url: str, token: str) -> None:
    await page.goto(url)
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#token", token)
    await page.click("#sign-in")


async def signal_rows(db: Any, interaction_id: str) -> list[tuple[Any, ...]]:
    return await fetch(
        db, "select id::text from analytics.eco_passive_signals where interaction_id = %s", (interaction_id,)
    )


async def test_dead_signals_are_shown_requeued_and_purged(
    browser: Browser, admin_server: TestServer, admin_client: TestClient, db: Any
) -> None:
    orphans = [await dead_signal(admin_client, db) for _ in range(3)]
    seqs = {
        key: await scalar(db, "select seq from eco_outbox.events where key = %s", (key,))
        for _, key in orphans
    }
    context = await browser.new_context()
    page = await context.new_page()
    errors = track_errors(page)
    dialogs = Dialogs(page)
    url = str(admin_server.make_url("/admin"))
    await sign_in(page, url, TOKEN)

    dead_rows = page.locator("#dead tr[data-seq]")
    await expect(dead_rows).to_have_count(3, timeout=UI_TIMEOUT_MS)
    for _, key in orphans:
        row = page.locator(f"#dead tr[data-key='{key}']")
        await expect(row.locator(".reason")).to_have_text("parent_missing")
        await expect(row).to_contain_text(str(seqs[key]))
    await expect(page.locator("#backlog tr[data-kind='signal'][data-state='dead']")).to_have_attribute(
        "data-rows", "3"
    )
    await expect(page.locator("#relay-running")).to_have_text("running")
    await expect(page.locator("#relay-loops")).to_have_text(str(TEST_RELAY.loops))
    await expect(page.locator("#last-batch")).to_contain_text(" claimed, ")
    await expect(page.locator("#failures tr[data-reason='parent_missing']").first).to_be_visible()
    await expect(page.locator("#readyz")).to_contain_text("ready")

    # Dismissed: nothing is sent, the letter stays dead.
    (first_iid, first_key), (second_iid, second_key), (_, third_key) = orphans
    dialogs.accept = False
    await page.locator(f"#dead tr[data-key='{first_key}'] button.requeue").click()
    await wait_for(lambda: _answered(dialogs), lambda count: count == 1)
    assert await page.locator("#result").is_hidden()
    assert await scalar(db, "select state from eco_outbox.events where key = %s", (first_key,)) == "dead"

    # Fix the cause (the parents come), then requeue one by its button and one as a selection.
    dialogs.accept = True
    await insert_interaction(db, first_iid)
    await insert_interaction(db, second_iid)
    await page.locator(f"#dead tr[data-key='{first_key}'] button.requeue").click()
    await expect(page.locator("#result")).to_have_text(f"requeued 1: {seqs[first_key]}")
    await page.locator(f"#dead tr[data-key='{second_key}'] input[type=checkbox]").check()
    await page.click("#requeue-selected")
    await expect(page.locator("#result")).to_have_text(f"requeued 1: {seqs[second_key]}")
    assert dialogs.questions[1:] == [
        f"Requeue dead letter {seqs[first_key]}? They will be delivered again, due now.",
        f"Requeue dead letter {seqs[second_key]}? They will be delivered again, due now.",
    ]

    for iid, key in orphans[:2]:
        assert await wait_for(lambda iid=iid: signal_rows(db, iid)) == [(key,)]
    await expect(dead_rows).to_have_count(1)
    await expect(page.locator(f"#dead tr[data-key='{third_key}']")).to_be_visible()
    await expect(page.locator("#chart rect").first).to_be_attached()

    await page.fill("#purge-days", "0")
    await page.click("#purge")
    await expect(page.locator("#result")).to_have_text("purged 1")
    await expect(dead_rows).to_have_count(0)
    assert await scalar(db, "select count(*) from eco_outbox.events where state = 'dead'") == 0
    for iid, _ in orphans[:2]:
        assert len(await signal_rows(db, iid)) == 1

    # The token lives in this tab's sessionStorage only: no cookie, not in the URL, kept across a reload.
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == TOKEN
    assert await context.cookies() == []
    assert TOKEN not in page.url
    await page.reload()
    await expect(page.locator("#dashboard")).to_be_visible()
    assert await page.locator("#login").is_hidden()
    assert errors == []
    await context.close()


async def _answered(dialogs: Dialogs) -> int:
    return len(dialogs.questions)


async def expect_no_data(page: Page) -> None:
    await expect(page.locator("#dashboard")).to_be_hidden()
    await expect(page.locator("#login")).to_be_visible()
    for table in ("#backlog", "#dead", "#failures"):
        await expect(page.locator(f"{table} tr")).to_have_count(0)
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None


async def test_a_wrong_token_shows_the_refusal_and_no_data(
    browser: Browser, admin_server: TestServer, admin_client: TestClient, db: Any
) -> None:
    await dead_signal(admin_client, db)
    page = await browser.new_page()
    url = str(admin_server.make_url("/admin"))
    await sign_in(page, url, "not-the-token")
    await expect(page.locator("#auth-error")).to_have_text(
        "HTTP 403 forbidden: the bearer token is not valid", timeout=UI_TIMEOUT_MS
    )
    await expect_no_data(page)

    # Blank (spaces only): no token at all is a 401.
    await page.fill("#token", "   ")
    await page.click("#sign-in")
    await expect(page.locator("#auth-error")).to_contain_text("HTTP 401 unauthorized")
    await expect_no_data(page)

    # The right one afterwards opens it.
    await page.fill("#token", TOKEN)
    await page.click("#sign-in")
    await expect(page.locator("#dead tr[data-seq]")).to_have_count(1, timeout=UI_TIMEOUT_MS)
    await page.close()


async def test_dead_letters_are_paged(
    browser: Browser, admin_server: TestServer, admin_client: TestClient, db: Any
) -> None:
    """One more than a page (50): the second page holds the last one, and the selection is per page."""
    batch = [{"interaction_id": str(uuid.uuid4()), "name": "orphan"} for _ in range(DEAD_PAGE_ROWS + 1)]
    assert (await admin_client.post("/api/signal", json=batch)).status == 202
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state = 'dead'"),
        lambda count: count == DEAD_PAGE_ROWS + 1,
    )
    last_seq = await scalar(db, "select max(seq) from eco_outbox.events where state = 'dead'")
    page = await browser.new_page()
    await sign_in(page, str(admin_server.make_url("/admin")), TOKEN)
    rows = page.locator("#dead tr[data-seq]")
    await expect(rows).to_have_count(DEAD_PAGE_ROWS, timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#prev")).to_be_disabled()
    await page.check("#select-all")
    await expect(page.locator("#requeue-selected")).to_have_text(f"Requeue selected ({DEAD_PAGE_ROWS})")

    await page.click("#next")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-seq", str(last_seq))
    await expect(page.locator("#next")).to_be_disabled()
    await expect(page.locator("#requeue-selected")).to_have_text("Requeue selected (0)")
    await page.click("#prev")
    await expect(rows).to_have_count(DEAD_PAGE_ROWS)
    await page.close()


async def test_the_page_says_when_admin_is_off(browser: Browser, config: Config, aiohttp_server: Any) -> None:
    server = await aiohttp_server(create_app(config))
    page = await browser.new_page()
    await sign_in(page, str(server.make_url("/admin")), TOKEN)
    await expect(page.locator("#auth-error")).to_contain_text(
        "HTTP 403 admin_disabled", timeout=UI_TIMEOUT_MS
    )
    await expect_no_data(page)
    await page.close()


async def test_admin_page_is_served_with_a_strict_policy(admin_client: TestClient) -> None:
    resp = await admin_client.get("/admin")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert 'id="dead"' in await resp.text()
    script = await admin_client.get("/static/admin.js")
    assert script.status == 200 and "sessionStorage" in await script.text()


async def test_relay_state_counts_deliveries_and_failures(admin_client: TestClient, db: Any) -> None:
    assert (await admin_client.get("/api/admin/relay")).status == 401
    assert (await admin_client.get("/api/admin/relay", headers={"Authorization": "Bearer x"})).status == 403

    resp = await admin_client.post("/api/ask-eco", json={"message": "Olá"})
    iid = (await resp.json())["interaction_id"]
    batch = [{"interaction_id": iid, "name": f"s{i}"} for i in range(5)]
    assert (await admin_client.post("/api/signal", json=batch)).status == 202
    await wait_for(
        lambda: scalar(
            db,
            "select count(*) from analytics.eco_passive_signals"
            " where interaction_id = %s and signal like 's_'",
            (iid,),
        ),
        lambda count: count == 5,
    )
    await dead_signal(admin_client, db)

    state = await (await admin_client.get("/api/admin/relay", headers=AUTH)).json()
    assert state["running"] is True and state["loops"] == TEST_RELAY.loops
    counts = state["delivered_per_s"]["counts"]
    # Only what this test delivered is sure to be in the last minute (other tests of the process add to it).
    assert len(counts) == 300 and sum(counts[-60:]) >= 5 + 2
    assert state["last_batch"]["claimed"] >= 1
    dead = [f for f in state["failures"] if f["metric"] == "eco_outbox_dead_lettered"]
    assert {"kind": "signal", "reason": "parent_missing"} in [f["labels"] for f in dead]


def test_activity_keeps_one_count_per_second_for_the_window() -> None:
    now = [1000.2]
    activity = RelayActivity(window_s=5, clock=lambda: now[0])
    assert activity.delivered_per_s() == (996, [0, 0, 0, 0, 0])
    assert activity.last_batch is None

    activity.record_batch(_Batch(claimed=4, delivered=3), 0.01)
    now[0] = 1000.9
    activity.record_batch(_Batch(claimed=2, delivered=2), 0.02)
    now[0] = 1002.5
    activity.record_batch(_Batch(claimed=1, delivered=1, dead=1), 0.03)
    assert activity.delivered_per_s() == (998, [0, 0, 5, 0, 1])
    assert activity.last_batch is not None and activity.last_batch.dead == 1

    # Five seconds on, the slot of second 1000 serves second 1005: the old count is gone, not added to.
    now[0] = 1005.1
    activity.record_batch(_Batch(claimed=7, delivered=7), 0.01)
    assert activity.delivered_per_s() == (1001, [0, 1, 0, 0, 7])
    now[0] = 1020.0
    assert activity.delivered_per_s() == (1016, [0, 0, 0, 0, 0])


class _Batch:
    def __init__(self, claimed: int, delivered: int, retried: int = 0, dead: int = 0) -> None:
        self.claimed, self.delivered, self.retried, self.dead = claimed, delivered, retried, dead
