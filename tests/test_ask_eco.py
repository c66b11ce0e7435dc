"""POST /api/ask-eco: the SSE sequence and framing, the headers before the body, the outbox write before
`prompt_ready`, the completion (tokens, latency) in the target, telemetry, JSON mode, client disconnects."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import aiopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from service.app import create_app
from service.chat.responder import OfflineResponder, estimate_tokens
from service.config import Config
from service.keys import STREAMS
from service.target.message_ids import target_holds_message_id
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, SSEEvent, fetch, iter_sse, probe, read_sse, scalar, wait_for

SSE = {"Accept": "text/event-stream"}
EVENT_ORDER = ("prompt_ready", "first_token", "chunk", "latency", "done")
TELEMETRY = {"prompt_ready", "first_token", "done"}


def reply_for(prompt: str) -> str:
    return OfflineResponder().reply_for(prompt)


def parse_frames(text: str) -> list[dict[str, str]]:
    """The raw SSE frames as field -> value, to check the framing itself rather than a parser's reading."""
    frames = []
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            frames.append(dict(line.split(": ", 1) for line in lines))
    return frames


def assert_sequence(names: list[str]) -> None:
    """prompt_ready, first_token, at least one chunk, latency, done, in that order and nothing else."""
    assert names[:2] == ["prompt_ready", "first_token"], names
    assert names[-2:] == ["latency", "done"], names
    assert set(names[2:-2]) == {"chunk"}, names


async def interaction_row(db: Any, iid: str) -> dict[str, Any] | None:
    rows = await fetch(
        db,
        "select id::text, user_id::text, session_id, message_id, prompt_hash, module_combo,"
        " tokens_in, tokens_out, latency_ms, meta from analytics.eco_interactions where id = %s",
        (iid,),
    )
    if not rows:
        return None
    keys = ("id", "user_id", "session_id", "message_id", "prompt_hash", "module_combo")
    return dict(zip((*keys, "tokens_in", "tokens_out", "latency_ms", "meta"), rows[0], strict=True))


async def completed_row(db: Any, iid: str) -> dict[str, Any]:
    """The interaction once its completion (tokens_out set) has reached the target."""
    return await wait_for(
        lambda: interaction_row(db, iid), lambda row: row is not None and row["tokens_out"] is not None
    )


async def telemetry(db: Any, iid: str) -> dict[str, dict[str, Any]]:
    """The server's telemetry signals of one interaction, by name, once all three have landed."""
    rows = await wait_for(
        lambda: fetch(
            db,
            "select signal, meta from analytics.eco_passive_signals where interaction_id = %s",
            (iid,),
        ),
        lambda rows: {name for name, _ in rows} >= TELEMETRY,
    )
    assert len(rows) == len(TELEMETRY), rows
    return dict(rows)


async def test_sse_framing_and_order(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá, tudo bem?"}, headers=SSE)
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    frames = parse_frames(await resp.text())
    assert all(set(frame) == {"event", "id", "data"} for frame in frames), frames
    ids = [int(frame["id"]) for frame in frames]
    assert ids == list(range(1, len(frames) + 1))
    datas = [json.loads(frame["data"]) for frame in frames]
    assert [data["type"] for data in datas] == [frame["event"] for frame in frames]
    names = [frame["event"] for frame in frames]
    assert_sequence(names)
    assert names.count("chunk") >= 2, "the offline responder streams several chunks"


async def test_headers_and_prompt_ready(make_client: Callable[..., Any], db: Any) -> None:
    # No relay: the interaction's row stays in the outbox's table, payload and all, where one would move it
    # to the log of delivered rows as soon as it is delivered.
    client = await make_client(relay=replace(TEST_RELAY, loops=0))
    headers = {
        **SSE,
        "X-Eco-Guest-Id": "guest_abc",
        "X-Eco-Session-Id": "session-42",
        "X-Eco-Client-Message-Id": "cm-1",
    }
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=headers)
    assert resp.status == 200
    iid = resp.headers["X-Eco-Interaction-Id"]
    assert str(uuid.UUID(iid)) == iid
    assert resp.headers["X-Eco-Guest-Id"] == "guest_abc"
    assert resp.headers["X-Eco-Session-Id"] == "session-42"
    assert resp.headers["X-Eco-Client-Message-Id"] == "cm-1"
    stream_id = resp.headers["X-Stream-Id"]
    uuid.UUID(stream_id)
    events = iter_sse(resp)
    first = await anext(events)
    # The row is durable before the first byte of the body: no waiting here.
    outbox = await fetch(
        db, "select kind, payload from eco_outbox.events where key = %s and kind = 'interaction'", (iid,)
    )
    assert len(outbox) == 1
    assert outbox[0][1]["session_id"] == "session-42"
    assert outbox[0][1]["message_id"] == "cm-1"
    assert first.event == "prompt_ready"
    assert first.data["interaction_id"] == iid
    assert first.data["streamId"] == stream_id
    # The ECO app reads `at` as epoch milliseconds, a number.
    assert isinstance(first.data["at"], int) and isinstance(first.data["sinceStartMs"], int)
    assert first.data["at"] > 1_700_000_000_000, "epoch milliseconds, not seconds"
    rest = [event async for event in events]
    assert rest[-1].event == "done"


async def test_default_guest_and_session_ids(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=SSE)
    # The ECO app stores a guest id only when it is a uuid v4.
    assert uuid.UUID(resp.headers["X-Eco-Guest-Id"]).version == 4
    uuid.UUID(resp.headers["X-Eco-Session-Id"])
    assert "X-Eco-Client-Message-Id" not in resp.headers
    await read_sse(resp)


async def test_client_message_id_from_body_is_echoed(client: TestClient) -> None:
    resp = await client.post(
        "/api/ask-eco", json={"message": "Olá", "client_message_id": "body-1"}, headers=SSE
    )
    assert resp.headers["X-Eco-Client-Message-Id"] == "body-1"
    await read_sse(resp)


def check_done(events: list[SSEEvent], prompt: str, iid: str) -> dict[str, Any]:
    """Chunks index 0..n-1 whose deltas join to done.content; latency and done shaped as the SPEC says."""
    chunks = [e.data for e in events if e.event == "chunk"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    content = "".join(c["delta"] for c in chunks)
    assert content == reply_for(prompt)
    first_token = next(e.data for e in events if e.event == "first_token")
    assert isinstance(first_token["latency_ms"], int) and first_token["latency_ms"] >= 0
    latency = next(e.data for e in events if e.event == "latency")
    assert latency["stage"] == "ttlc"
    assert latency["first_token_latency_ms"] == first_token["latency_ms"]
    assert latency["total_latency_ms"] >= latency["first_token_latency_ms"]
    done = events[-1].data
    assert done["interaction_id"] == iid
    assert done["content"] == content
    assert done["index"] == len(chunks)
    assert done["meta"]["finishReason"] == "stop"
    usage = done["meta"]["usage"]
    assert usage == {"input_tokens": estimate_tokens(prompt), "output_tokens": estimate_tokens(content)}
    payload = done["payload"]
    assert payload["content"] == content and payload["interaction_id"] == iid
    assert payload["tokens"] == {"in": usage["input_tokens"], "out": usage["output_tokens"]}
    assert payload["timings"] == {
        "first_token_latency_ms": latency["first_token_latency_ms"],
        "total_latency_ms": latency["total_latency_ms"],
    }
    assert isinstance(payload["at"], str) and payload["sinceStartMs"] >= latency["total_latency_ms"]
    return done


async def test_chunks_latency_done_and_completion(client: TestClient, db: Any) -> None:
    prompt = "Estou cansado e não sei por onde começar hoje."
    user_id = str(uuid.uuid4())
    resp = await client.post(
        "/api/ask-eco",
        json={"message": prompt, "user_id": user_id, "client_message_id": "m-77"},
        headers={**SSE, "X-Eco-Session-Id": "s-1"},
    )
    iid = resp.headers["X-Eco-Interaction-Id"]
    events = await read_sse(resp)
    assert_sequence([e.event for e in events])
    done = check_done(events, prompt, iid)
    latency = next(e.data for e in events if e.event == "latency")

    row = await completed_row(db, iid)
    assert row["tokens_in"] == done["meta"]["usage"]["input_tokens"]
    assert row["tokens_out"] == done["meta"]["usage"]["output_tokens"]
    assert row["latency_ms"] >= latency["total_latency_ms"]
    assert row["user_id"] == user_id
    assert row["session_id"] == "s-1"
    assert row["message_id"] == "m-77"
    assert row["prompt_hash"] == hashlib.sha256(prompt.encode()).hexdigest()
    assert row["module_combo"] == ["offline"]
    assert row["meta"]["finish_reason"] == "stop"
    assert row["meta"]["chunks"] == done["index"]


async def test_telemetry_signals_reach_the_target(client: TestClient, db: Any) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=SSE)
    iid = resp.headers["X-Eco-Interaction-Id"]
    events = await read_sse(resp)
    done = events[-1].data
    first_token = next(e.data for e in events if e.event == "first_token")
    signals = await telemetry(db, iid)
    assert all(meta["type"] == "server" for meta in signals.values())
    assert signals["prompt_ready"]["stream_id"] == resp.headers["X-Stream-Id"]
    assert signals["first_token"]["latency_ms"] == first_token["latency_ms"]
    assert signals["done"]["finish_reason"] == "stop"
    assert signals["done"]["chunks"] == done["index"]
    assert signals["done"]["bytes"] == len(done["content"].encode("utf-8"))
    assert signals["done"]["first_token_latency_ms"] == first_token["latency_ms"]
    assert signals["done"]["total_latency_ms"] >= 0


async def test_json_mode(client: TestClient, db: Any) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"interaction_id", "content", "index", "meta", "payload"}
    assert body["interaction_id"] == resp.headers["X-Eco-Interaction-Id"]
    assert body["content"] == reply_for("Olá") == body["payload"]["content"]
    assert body["meta"]["finishReason"] == "stop"
    assert body["index"] >= 2
    row = await completed_row(db, body["interaction_id"])
    assert row["tokens_out"] == body["meta"]["usage"]["output_tokens"]
    await telemetry(db, body["interaction_id"])


async def test_stream_true_in_body_streams(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá", "stream": True})
    assert resp.content_type == "text/event-stream"
    assert_sequence([e.event for e in await read_sse(resp)])


async def test_stream_false_without_accept_is_json(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco", json={"message": "Olá", "stream": False})
    assert resp.content_type == "application/json"
    assert (await resp.json())["content"] == reply_for("Olá")


@pytest.mark.parametrize("field", ["text", "mensagem"])
async def test_message_aliases(client: TestClient, field: str) -> None:
    resp = await client.post("/api/ask-eco", json={field: "Bom dia"})
    assert resp.status == 200
    assert (await resp.json())["content"] == reply_for("Bom dia")


async def test_messages_history_last_user_message_counts(client: TestClient, db: Any) -> None:
    history = [
        {"role": "system", "content": "Seja gentil."},
        {"role": "user", "content": "primeira pergunta"},
        {"role": "assistant", "content": "uma resposta"},
        {"role": "user", "content": "segunda pergunta"},
        {"role": "assistant", "content": "dropped: after the last user message"},
    ]
    resp = await client.post("/api/ask-eco", json={"messages": history}, headers=SSE)
    iid = resp.headers["X-Eco-Interaction-Id"]
    done = (await read_sse(resp))[-1].data
    assert done["content"] == reply_for("segunda pergunta")
    expected_in = sum(estimate_tokens(m["content"]) for m in history[:4])
    assert done["meta"]["usage"]["input_tokens"] == expected_in
    row = await completed_row(db, iid)
    assert row["prompt_hash"] == hashlib.sha256(b"segunda pergunta").hexdigest()


@pytest.mark.parametrize("where", ["body", "header"])
async def test_duplicate_client_message_id_is_409(client: TestClient, db: Any, where: str) -> None:
    def ask() -> Any:
        if where == "body":
            return client.post("/api/ask-eco", json={"message": "Olá", "client_message_id": "dup"})
        return client.post(
            "/api/ask-eco", json={"message": "Olá"}, headers={"X-Eco-Client-Message-Id": "dup"}
        )

    first = await ask()
    assert first.status == 200
    await first.json()
    second = await ask()
    assert second.status == 409
    assert second.content_type == "application/json"
    assert (await second.json())["error"] == "duplicate_client_message_id"
    assert "X-Eco-Interaction-Id" not in second.headers
    assert await scalar(db, f"select count(*) from {OUTBOX_ROWS} where kind = 'interaction'") == 1


async def test_a_client_message_id_the_target_holds_is_409_at_the_door(client: TestClient, db: Any) -> None:
    """The outbox's row (and its dedupe key) was purged after retention; the target still holds the id. The
    ask is refused before anything is stored, not accepted and then dead in the target."""
    await fetch(
        db,
        "insert into analytics.eco_interactions (id, message_id) values (%s, 'kept')",
        (str(uuid.uuid4()),),
    )
    resp = await client.post("/api/ask-eco", json={"message": "Olá", "client_message_id": "kept"})
    assert resp.status == 409
    assert (await resp.json())["error"] == "duplicate_client_message_id"
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0
    other = await client.post("/api/ask-eco", json={"message": "Olá", "client_message_id": "new"})
    assert other.status == 200
    await other.json()


async def test_an_unreachable_target_does_not_hold_the_door() -> None:
    """The lookup is the target's; intake does not depend on it: refused, it answers "cannot say"."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        refused_dsn = f"host=127.0.0.1 port={probe_socket.getsockname()[1]} dbname=none user=none"
    pool = await aiopg.create_pool(refused_dsn, minsize=0, maxsize=1, timeout=5, enable_hstore=False)
    try:
        assert await target_holds_message_id(pool, "any") is None
    finally:
        pool.close()
        await pool.wait_closed()


# aiopg's LISTEN connection waits on its notifies queue through a task of its own, renewed with each NOTIFY.
AIOPG_NOTIFY_WAIT = "Queue.get"


def new_tasks(baseline: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Live tasks started since `baseline`, other than the outbox listener's queue wait."""
    return {
        task
        for task in asyncio.all_tasks()
        if task not in baseline
        and not task.done()
        and getattr(task.get_coro(), "__qualname__", None) != AIOPG_NOTIFY_WAIT
    }


@asynccontextmanager
async def serve(app: web.Application, *, handler_cancellation: bool) -> AsyncIterator[URL]:
    """The app on a real socket with the chosen `handler_cancellation` (aiohttp's TestServer forces True)."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()
        yield URL.build(scheme="http", host=host, port=port)
    finally:
        await runner.cleanup()
        sock.close()


@pytest.mark.parametrize("handler_cancellation", [True, False], ids=["cancelled", "write-fails"])
async def test_client_disconnect_completes_the_interaction(
    make_config: Callable[..., Config], db: Any, handler_cancellation: bool
) -> None:
    """Whether aiohttp cancels the handler (as `make run` does) or the next write fails, the run ends,
    is completed with finish_reason client_disconnect, and leaves no task behind."""
    app = create_app(make_config(offline_chunk_delay_ms=100.0))
    prompt = "Uma conversa longa"
    async with (
        serve(app, handler_cancellation=handler_cancellation) as url,
        aiohttp.ClientSession() as session,
    ):
        baseline = asyncio.all_tasks()
        resp = await session.post(url / "api/ask-eco", json={"message": prompt}, headers=SSE)
        iid = resp.headers["X-Eco-Interaction-Id"]
        seen = []
        async for event in iter_sse(resp):
            seen.append(event.event)
            if event.event == "chunk":
                break
        assert seen == ["prompt_ready", "first_token", "chunk"]
        assert len(app[STREAMS]) == 1
        assert new_tasks(baseline), "the stream's handler runs in a task of its own"
        resp.close()

        await wait_for(probe(lambda: len(app[STREAMS])), lambda n: n == 0)
        await wait_for(probe(lambda: new_tasks(baseline)), lambda tasks: not tasks)
        row = await completed_row(db, iid)
        assert row["meta"]["finish_reason"] == "client_disconnect"
        assert row["meta"]["chunks"] < len(reply_for(prompt).split(" ")) / 3
        signals = await telemetry(db, iid)
        assert signals["done"]["finish_reason"] == "client_disconnect"
        assert signals["done"]["chunks"] == row["meta"]["chunks"]


async def test_disconnect_before_reading_anything(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    """A client gone right after the headers: the interaction is still written and completed."""
    app = create_app(make_config(offline_chunk_delay_ms=50.0))
    client = await aiohttp_client(app)
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=SSE)
    iid = resp.headers["X-Eco-Interaction-Id"]
    resp.close()
    row = await completed_row(db, iid)
    assert row["meta"]["finish_reason"] == "client_disconnect"
    await wait_for(probe(lambda: len(app[STREAMS])), lambda n: n == 0)


async def test_sessions_from_many_clients_are_independent(client: TestClient) -> None:
    """Concurrent streams each get their own id and their own, complete reply."""
    prompts = [f"pergunta número {i}" for i in range(8)]

    async def one(prompt: str) -> tuple[str, str]:
        resp = await client.post("/api/ask-eco", json={"message": prompt}, headers=SSE)
        done = (await read_sse(resp))[-1].data
        return resp.headers["X-Eco-Interaction-Id"], done["content"]

    results = await asyncio.gather(*(one(p) for p in prompts))
    assert len({iid for iid, _ in results}) == len(prompts)
    assert [content for _, content in results] == [reply_for(p) for p in prompts]
