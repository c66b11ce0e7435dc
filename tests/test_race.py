"""The ECO race, replayed: many clients read `prompt_ready` and at once post signals for that interaction,
while its row is still on its way to the target. Every signal is acknowledged, and every one lands once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from outbox.backoff import Backoff
from service.app import create_app
from service.config import Config
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, iter_sse, wait_for

CLIENTS = 20
SIGNALS_PER_CLIENT = 5
TELEMETRY = ("prompt_ready", "first_token", "done")

# (relay settings, whether the target's interactions table is locked while the clients run)
SCENARIOS = {
    "one-relay": (TEST_RELAY, False),
    # Small batches over several workers: signals are often claimed while another worker still holds their
    # interaction, so the parent-missing path and the release of waiting signals are exercised too.
    "three-workers-small-batches": (replace(TEST_RELAY, loops=3, batch_size=4), False),
    # The same with the production backoff (a 30 s cap): a signal that missed its release would wait out
    # the cap, far past wait_for's deadline; TEST_RELAY's 200 ms cap would hide it.
    "three-workers-production-backoff": (
        replace(TEST_RELAY, loops=3, batch_size=4, backoff=Backoff()),
        False,
    ),
    # No interaction can reach the target until every client is done: the race at its worst, every signal
    # arrives before its parent, and intake must not notice.
    "target-locked": (TEST_RELAY, True),
}


async def one_client(client: TestClient, number: int) -> tuple[str, list[tuple[int, Any]]]:
    """Ask, and the moment prompt_ready arrives post signals for it, all at once; then read to the end."""
    resp = await client.post(
        "/api/ask-eco", json={"message": f"cliente {number}"}, headers={"Accept": "text/event-stream"}
    )
    assert resp.status == 200
    events = iter_sse(resp)
    prompt_ready = await anext(events)
    assert prompt_ready.event == "prompt_ready"
    iid = prompt_ready.data["interaction_id"]

    async def signal(i: int) -> tuple[int, Any]:
        answer = await client.post(
            "/api/signal", json={"interaction_id": iid, "name": f"sig{i}", "meta": {"i": i}}
        )
        return answer.status, await answer.json()

    answers = await asyncio.gather(*(signal(i) for i in range(SIGNALS_PER_CLIENT)))
    names = [event.event async for event in events]
    assert names[-1] == "done"
    return iid, answers


@asynccontextmanager
async def interactions_locked(db: Any, locked: bool) -> AsyncIterator[None]:
    """Hold a lock that blocks every insert into analytics.eco_interactions (reads still pass)."""
    if not locked:
        yield
        return
    async with db.acquire() as conn, conn.cursor() as cur, cur.begin():
        await cur.execute("lock table analytics.eco_interactions in share mode")
        yield


@pytest.mark.parametrize(("relay", "locked"), SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_signals_posted_at_prompt_ready_all_land_once(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any, relay: Any, locked: bool
) -> None:
    # A chunk delay keeps every stream open while its signals are posted, as in the browser.
    client = await aiohttp_client(create_app(make_config(relay=relay, offline_chunk_delay_ms=5.0)))
    async with interactions_locked(db, locked):
        results = await asyncio.gather(*(one_client(client, n) for n in range(CLIENTS)))
        if locked:
            for table in ("eco_interactions", "eco_passive_signals"):
                assert await fetch(db, f"select count(*) from analytics.{table}") == [(0,)]

    acknowledged: dict[str, str] = {}
    for iid, answers in results:
        for status, body in answers:
            assert status == 202, body
            assert body["status"] == "queued"
            acknowledged[body["id"]] = iid
    assert len(acknowledged) == CLIENTS * SIGNALS_PER_CLIENT

    outbox_rows = CLIENTS * (2 + SIGNALS_PER_CLIENT + len(TELEMETRY))  # interaction, completion, signals

    async def delivered() -> int:
        rows = await fetch(db, f"select count(*) from {OUTBOX_ROWS} where state = 'delivered'")
        return rows[0][0]

    await wait_for(delivered, lambda count: count == outbox_rows)
    assert dict(await fetch(db, f"select state, count(*) from {OUTBOX_ROWS} group by state")) == {
        "delivered": outbox_rows
    }
    rows = await fetch(db, "select id::text, interaction_id::text, signal from analytics.eco_passive_signals")
    assert len(rows) == CLIENTS * (SIGNALS_PER_CLIENT + len(TELEMETRY))
    by_id = {signal_id: iid for signal_id, iid, _ in rows}
    assert len(by_id) == len(rows), "no signal is stored twice"
    assert {sid: by_id.get(sid) for sid in acknowledged} == acknowledged
    expected = sorted([*TELEMETRY, *(f"sig{i}" for i in range(SIGNALS_PER_CLIENT))])
    for iid, _ in results:
        assert sorted(name for _, parent, name in rows if parent == iid) == expected
