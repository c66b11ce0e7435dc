"""SIGTERM on a real service process: streams end with a final event, accepted work is kept, exit bounded."""

from __future__ import annotations

import json
import signal
import uuid

import aiohttp
import pytest

from tests.helpers import OUTBOX_ROWS, fetch, finish_reason, iter_sse, wait_for
from tests.service_process import ServiceProcess

EXIT_BOUND_S = 20.0


@pytest.mark.slow
async def test_sigterm_ends_streams_keeps_accepted_work_and_exits(database_url, db, tmp_path) -> None:
    service = ServiceProcess(
        {
            "DATABASE_URL": database_url,
            "ECO_OFFLINE_CHUNK_DELAY_MS": "300",
            "ECO_LOG_JSON": "1",
            "ECO_RELAY_BACKOFF_BASE_MS": "20",
        },
        tmp_path / "service.log",
    )
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            orphan = str(uuid.uuid4())
            async with session.post(
                f"{service.url}/api/signal", json={"interaction_id": orphan, "name": "v"}
            ) as r:
                assert r.status == 202
                orphan_signal = (await r.json())["id"]
            async with session.post(
                f"{service.url}/api/ask-eco", json={"message": "Olá"}, headers={"Accept": "text/event-stream"}
            ) as resp:
                interaction_id = resp.headers["X-Eco-Interaction-Id"]
                events = iter_sse(resp)
                assert (await anext(events)).event == "prompt_ready"
                service.send(signal.SIGTERM)
                rest = [event async for event in events]
        names = [event.event for event in rest]
        assert names[-3:] == ["error", "latency", "done"]
        assert rest[-3].data["code"] == "server_shutdown"
        assert rest[-1].data["meta"]["finishReason"] == "server_shutdown"
        assert await service.wait(EXIT_BOUND_S) == 0

        assert await finish_reason(db, interaction_id) == "server_shutdown"
        assert await fetch(db, f"SELECT state FROM {OUTBOX_ROWS} WHERE key = %s", (orphan_signal,)) in (
            [("pending",)],
            [("dead",)],
        )
        lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
        assert lines, "ECO_LOG_JSON=1 writes one JSON object a line"
        retries = [line for line in lines if line.get("code") == "parent_missing"]
        assert retries and {"interaction_id", "signal", "attempt", "delay_ms"} <= set(retries[0])
        assert retries[0]["signal"] == orphan_signal

        # Started again on the same database, it delivers what the stopped one left behind.
        await fetch(db, "INSERT INTO analytics.eco_interactions (id) VALUES (%s) RETURNING id", (orphan,))
        restarted = ServiceProcess({"DATABASE_URL": database_url}, tmp_path / "restarted.log")
        await restarted.start()
        try:
            await wait_for(
                lambda: fetch(
                    db,
                    "SELECT id::text FROM analytics.eco_passive_signals WHERE interaction_id = %s",
                    (orphan,),
                ),
                lambda rows: rows == [(orphan_signal,)],
            )
        finally:
            await restarted.stop()
    finally:
        await service.stop()
