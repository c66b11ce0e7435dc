from __future__ import annotations

from tests.helpers import fetch, read_sse, wait_for


async def test_ask_and_signal(client, db) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers={"Accept": "text/event-stream"})
    assert resp.status == 200
    iid = resp.headers["X-Eco-Interaction-Id"]
    events = await read_sse(resp)
    assert [e.event for e in events][0] == "prompt_ready"
    r = await client.post("/api/signal", json={"interaction_id": iid, "name": "view"})
    assert r.status == 202, await r.text()
    rows = await wait_for(lambda: fetch(db, "select signal from analytics.eco_passive_signals where interaction_id=%s", (iid,)), lambda r: len(r) >= 4)
    print(rows, [e.event for e in events])
