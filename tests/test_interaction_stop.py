"""A shutdown's stop reaches a run that is waiting on its responder: the read is cancelled from outside (no
stop waiter per chunk), the stream still ends with error then done, and the interaction is completed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web

from service.app import create_app
from service.chat.responder import ChatMessage
from service.config import Config
from service.keys import RESPONDER, STREAMS
from tests.helpers import fetch, iter_sse, wait_for

SSE = {"Accept": "text/event-stream"}


class WaitingResponder:
    """One piece, then a wait the test never ends: only a stop can end the run."""

    name = "waiting"
    modules = (name,)

    def __init__(self, *, swallow_cancel: bool) -> None:
        self._swallow_cancel = swallow_cancel
        self.cancelled = asyncio.Event()

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield "primeiro"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            if not self._swallow_cancel:
                raise
        yield "depois do cancelamento"


@pytest.mark.parametrize("swallow_cancel", [False, True], ids=["cancel-raised", "cancel-swallowed"])
async def test_stop_while_the_responder_waits(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any, swallow_cancel: bool
) -> None:
    """Even a responder that swallows the cancel and yields again ends as server_shutdown, and the
    handler's task carries no stray cancel request into the rest of the stream."""
    app = create_app(make_config())
    responder = WaitingResponder(swallow_cancel=swallow_cancel)

    async def waiting(app: web.Application) -> AsyncIterator[None]:
        app[RESPONDER] = responder
        yield

    app.cleanup_ctx.append(waiting)
    client = await aiohttp_client(app)
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=SSE)
    assert resp.status == 200
    iid = resp.headers["X-Eco-Interaction-Id"]
    events = []
    async for event in iter_sse(resp):
        events.append(event)
        if event.event == "chunk":
            await app[STREAMS].stop_all(timeout_s=10.0)
        if event.event == "done":
            break
    assert [event.event for event in events] == [
        "prompt_ready",
        "first_token",
        "chunk",
        "error",
        "latency",
        "done",
    ]
    assert responder.cancelled.is_set()
    assert events[2].data["delta"] == "primeiro"
    assert events[3].data["code"] == "server_shutdown"
    assert events[-1].data["meta"]["finishReason"] == "server_shutdown"
    assert len(app[STREAMS]) == 0
    rows = await wait_for(
        lambda: fetch(
            db,
            "select meta->>'finish_reason', meta->>'chunks' from analytics.eco_interactions"
            " where id = %s and tokens_out is not null",
            (iid,),
        )
    )
    assert rows == [("server_shutdown", "1")]
