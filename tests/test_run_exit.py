"""The run's exit is the one place it ends: the block's end gives the finish reason, and the interaction is
completed exactly once, whatever the view did (or failed to do) inside it."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import suppress

import aiopg
import pytest
from aiohttp.test_utils import TestClient

from service.chat.interaction import InteractionRun
from service.chat.schemas import ask_schema
from service.keys import CONFIG, DEFERRED, RESPONDER, WRITER
from tests.helpers import finish_reason


class ViewFailed(Exception):
    """What a view's bug raises inside the run."""


def _run(client: TestClient) -> InteractionRun:
    app = client.server.app
    return InteractionRun(
        app[WRITER],
        app[RESPONDER],
        ask_schema(app[CONFIG].limits).load({"message": "oi"}),
        deferred=app[DEFERRED],
        guest_id=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        client_message_id=None,
    )


async def _completions(db: aiopg.Pool, run: InteractionRun) -> list[tuple[str, ...]]:
    reason = await finish_reason(db, str(run.interaction_id))
    return [] if reason is None else [(reason,)]


@pytest.mark.parametrize(
    ("raised", "finish_reason"),
    [
        (ConnectionResetError, "client_disconnect"),
        (asyncio.CancelledError, "client_disconnect"),
        (ViewFailed, "error"),
    ],
    ids=["reset", "cancelled", "failed"],
)
async def test_a_block_left_by_an_exception_completes_with_the_reason_it_gives(
    client: TestClient, db: aiopg.Pool, raised: type[BaseException], finish_reason: str
) -> None:
    """Left after prompt_ready, before any other event: the exception goes on up, the completion stays."""
    run = _run(client)
    await run.open()
    with pytest.raises(raised):
        async with run:
            async for name, _ in run.events():
                assert name == "prompt_ready"
                raise raised("left inside the run")
    assert await _completions(db, run) == [(finish_reason,)]


async def test_a_block_that_sent_every_event_keeps_the_responders_reason_and_completes_once(
    client: TestClient, db: aiopg.Pool
) -> None:
    """The completion made durable before `done` is the one; the exit (even a client gone right after done)
    adds none."""
    run = _run(client)
    await run.open()
    names = []
    with suppress(ConnectionResetError):
        async with run:
            async for name, _ in run.events():
                names.append(name)
            raise ConnectionResetError("gone after done")
    assert names[0] == "prompt_ready"
    assert names[-1] == "done"
    assert await _completions(db, run) == [("stop",)]
