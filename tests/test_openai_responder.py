"""The OpenAI-compatible responder against a fake OpenAI-compatible server started here: streamed `data:`
chunks, error statuses, malformed and truncated streams, a stall that trips the timeout, a client that goes
away (the upstream request is closed too), and a backend that answers without streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.chat.responder import ChatMessage, OfflineResponder, OpenAIResponder, build_responder
from service.config import Config, ConfigError
from service.keys import RESPONDER
from tests.helpers import fetch, read_sse, wait_for

SSE = {"Accept": "text/event-stream"}
API_KEY = "sk-test-key"
MODEL = "fake-model"
PIECES = ("Olá", ", tudo", " bem?")
# Pacing between the chunks of the endless stream, so that the test client can leave in the middle of it.
ENDLESS_CHUNK_GAP_S = 0.01
ENDLESS_MAX_CHUNKS = 2000
OVERLONG_LINE_BYTES = 4 * 1024 * 1024


def chunk(content: str | None = None, finish_reason: str | None = None, **delta: Any) -> bytes:
    if content is not None:
        delta["content"] = content
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


DONE = b"data: [DONE]\n\n"

Scenario = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeLLM:
    """An OpenAI-compatible `/v1/chat/completions` whose behaviour each test picks."""

    scenario: Scenario | None = None
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.json()))
        assert self.scenario is not None
        return await self.scenario(request)

    async def sse(self, request: web.Request, *frames: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
        return response

    async def streamed(self, request: web.Request) -> web.StreamResponse:
        frames = [chunk(role="assistant"), *(chunk(piece) for piece in PIECES), chunk(finish_reason="stop")]
        return await self.sse(request, *frames, DONE)

    async def split_lines(self, request: web.Request) -> web.StreamResponse:
        """Comments, an `event:` field and a chunk written a few bytes at a time."""
        frame = chunk(PIECES[0])
        parts = [
            b": keep-alive\n\n",
            b"event: message\n",
            *(frame[i : i + 5] for i in range(0, len(frame), 5)),
        ]
        return await self.sse(request, *parts, chunk(finish_reason="stop"), DONE)

    async def malformed(self, request: web.Request) -> web.StreamResponse:
        return await self.sse(request, chunk(PIECES[0]), b"data: {not json\n\n", DONE)

    async def wrong_shape(self, request: web.Request) -> web.StreamResponse:
        return await self.sse(request, chunk(PIECES[0]), b'data: {"choices": [{"delta": "text"}]}\n\n', DONE)

    async def overlong_line(self, request: web.Request) -> web.StreamResponse:
        """A line far past the client's read buffer: refused, not buffered without bound."""
        return await self.sse(request, chunk(PIECES[0]), b"data: " + b"x" * OVERLONG_LINE_BYTES + b"\n\n")

    async def truncated(self, request: web.Request) -> web.StreamResponse:
        return await self.sse(request, chunk(PIECES[0]), chunk(PIECES[1]))

    async def in_band_error(self, request: web.Request) -> web.StreamResponse:
        return await self.sse(request, chunk(PIECES[0]), b'data: {"error": {"message": "overloaded"}}\n\n')

    async def stall(self, request: web.Request) -> web.StreamResponse:
        response = await self.sse(request, chunk(PIECES[0]))
        await self.release.wait()
        return response

    async def endless(self, request: web.Request) -> web.StreamResponse:
        """Chunks until the reader goes away: its write fails, or (TestServer) its handler is cancelled."""
        response = await self.sse(request)
        try:
            for index in range(ENDLESS_MAX_CHUNKS):
                await response.write(chunk(f" {index}"))
                await asyncio.sleep(ENDLESS_CHUNK_GAP_S)
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_gone.set()
            raise
        return response

    async def not_streamed(self, request: web.Request) -> web.Response:
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(PIECES)}}]}
        return web.json_response(body)


@pytest.fixture
async def fake_llm(aiohttp_server: Any) -> Any:
    fake = FakeLLM()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    server = await aiohttp_server(app)
    yield fake, server
    fake.release.set()


@pytest.fixture
async def llm_client(fake_llm: Any, make_config: Callable[..., Config], aiohttp_client: Any) -> TestClient:
    _, server = fake_llm
    config = make_config(
        llm_url=str(server.make_url("/v1")), llm_api_key=API_KEY, llm_model=MODEL, llm_timeout_s=0.5
    )
    return await aiohttp_client(create_app(config))


async def finish_reason_in_target(db: Any, iid: str) -> str:
    rows = await wait_for(
        lambda: fetch(
            db,
            "select meta->>'finish_reason' from analytics.eco_interactions"
            " where id = %s and tokens_out is not null",
            (iid,),
        )
    )
    return rows[0][0]


async def ask(client: TestClient) -> tuple[str, list[Any]]:
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=SSE)
    assert resp.status == 200
    return resp.headers["X-Eco-Interaction-Id"], await read_sse(resp)


async def test_streams_the_backends_chunks(fake_llm: Any, llm_client: TestClient, db: Any) -> None:
    fake, _ = fake_llm
    fake.scenario = fake.streamed
    iid, events = await ask(llm_client)
    names = [event.event for event in events]
    assert names[:2] == ["prompt_ready", "first_token"] and names[-2:] == ["latency", "done"], names
    assert [event.data["delta"] for event in events if event.event == "chunk"] == list(PIECES)
    done = events[-1].data
    assert done["content"] == "".join(PIECES)
    assert done["meta"]["finishReason"] == "stop"
    [(headers, body)] = fake.requests
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert body == {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Olá"}]}
    assert await finish_reason_in_target(db, iid) == "stop"
    module_combo = await fetch(
        db, "select module_combo from analytics.eco_interactions where id = %s", (iid,)
    )
    assert module_combo == [(["openai"],)]
    assert done["meta"]["module_combo"] == done["payload"]["module_combo"] == ["openai"]


async def test_the_configured_modules_are_named_in_done(
    fake_llm: Any, make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    fake, server = fake_llm
    fake.scenario = fake.streamed
    config = make_config(llm_url=str(server.make_url("/v1")), llm_modules=("IDENTIDADE", "eco.calma"))
    iid, events = await ask(await aiohttp_client(create_app(config)))
    done = events[-1].data
    assert done["meta"]["module_combo"] == done["payload"]["module_combo"] == ["IDENTIDADE", "eco.calma"]
    assert await wait_for(
        lambda: fetch(db, "select module_combo from analytics.eco_interactions where id = %s", (iid,))
    ) == [(["IDENTIDADE", "eco.calma"],)]


def test_module_keys_are_read_from_the_environment() -> None:
    assert Config.from_env({"ECO_LLM_MODULES": "IDENTIDADE, eco.calma"}).llm_modules == (
        "IDENTIDADE",
        "eco.calma",
    )
    assert Config.from_env({}).llm_modules == ()
    # The ECO app drops a key outside its pattern without a word: refused at start instead.
    with pytest.raises(ConfigError, match="ECO_LLM_MODULES"):
        Config.from_env({"ECO_LLM_MODULES": "ok,not ok"})


async def test_parses_comments_fields_and_split_writes(fake_llm: Any, llm_client: TestClient) -> None:
    fake, _ = fake_llm
    fake.scenario = fake.split_lines
    _, events = await ask(llm_client)
    assert events[-1].data["content"] == PIECES[0]
    assert events[-1].data["meta"]["finishReason"] == "stop"


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "upstream_status"), (401, "upstream_auth"), (429, "upstream_rate_limited")],
)
async def test_error_status_is_an_error_event(
    fake_llm: Any, llm_client: TestClient, db: Any, status: int, code: str
) -> None:
    fake, _ = fake_llm

    async def failing(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "secret upstream detail"}}, status=status)

    fake.scenario = failing
    iid, events = await ask(llm_client)
    assert [event.event for event in events] == ["prompt_ready", "error", "latency", "done"]
    error = events[1].data
    assert error["code"] == code and str(status) in error["message"]
    assert "secret" not in json.dumps([event.data for event in events])
    assert events[-1].data["meta"]["finishReason"] == "error"
    assert await finish_reason_in_target(db, iid) == "error"


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("malformed", "upstream_malformed"),
        ("wrong_shape", "upstream_malformed"),
        ("truncated", "upstream_truncated"),
        ("overlong_line", "upstream_malformed"),
        ("in_band_error", "upstream_error"),
        ("stall", "upstream_timeout"),
    ],
)
async def test_broken_stream_keeps_what_came_and_ends_with_error(
    fake_llm: Any, llm_client: TestClient, db: Any, scenario: str, code: str
) -> None:
    fake, _ = fake_llm
    fake.scenario = getattr(fake, scenario)
    iid, events = await ask(llm_client)
    names = [event.event for event in events]
    assert names[:3] == ["prompt_ready", "first_token", "chunk"], names
    assert names[-3:] == ["error", "latency", "done"], names
    assert events[-3].data["code"] == code
    done = events[-1].data
    assert done["meta"]["finishReason"] == "error"
    assert done["content"].startswith(PIECES[0])
    assert await finish_reason_in_target(db, iid) == "error"


async def test_unreachable_backend(
    make_config: Callable[..., Config], aiohttp_client: Any, unused_tcp_port: int
) -> None:
    config = make_config(llm_url=f"http://127.0.0.1:{unused_tcp_port}/v1", llm_timeout_s=0.5)
    client = await aiohttp_client(create_app(config))
    _, events = await ask(client)
    assert [event.event for event in events] == ["prompt_ready", "error", "latency", "done"]
    assert events[1].data["code"] == "upstream_unreachable"


async def test_client_disconnect_closes_the_upstream_request(
    fake_llm: Any, llm_client: TestClient, db: Any
) -> None:
    fake, _ = fake_llm
    fake.scenario = fake.endless
    resp = await llm_client.post("/api/ask-eco", json={"message": "Olá"}, headers=SSE)
    iid = resp.headers["X-Eco-Interaction-Id"]
    events = await read_sse(resp, until="chunk")
    assert events[-1].event == "chunk"
    resp.close()
    assert await finish_reason_in_target(db, iid) == "client_disconnect"
    await asyncio.wait_for(fake.client_gone.wait(), timeout=10)


async def test_backend_that_does_not_stream(fake_llm: Any, llm_client: TestClient) -> None:
    fake, _ = fake_llm
    fake.scenario = fake.not_streamed
    resp = await llm_client.post("/api/ask-eco", json={"message": "Olá"})
    assert resp.status == 200
    body = await resp.json()
    assert body["content"] == "".join(PIECES)
    assert body["meta"]["finishReason"] == "stop"


async def test_offline_responder_is_the_default() -> None:
    assert isinstance(build_responder(Config.from_env({}), None), OfflineResponder)
    configured = Config.from_env({"ECO_LLM_URL": "http://127.0.0.1:9/v1", "ECO_LLM_TIMEOUT_S": "2"})
    async with aiohttp.ClientSession() as session:
        assert isinstance(build_responder(configured, session), OpenAIResponder)


def test_url_gets_the_chat_completions_path() -> None:
    for url in ("http://h/v1", "http://h/v1/", "http://h/v1/chat/completions"):
        responder = OpenAIResponder(None, url, None, MODEL, 1.0)  # type: ignore[arg-type]
        assert responder._url == "http://h/v1/chat/completions"


class CrashingResponder:
    """A responder with a bug: one piece, then an exception that is not a ResponderError."""

    name = "crashing"
    modules = (name,)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield PIECES[0]
        raise RuntimeError("a bug in the responder")


async def test_a_crashing_responder_still_ends_the_stream(
    make_config: Callable[..., Config], aiohttp_client: Any, db: Any
) -> None:
    """Not only the backend's failures: any exception ends the stream with error then done, and the
    interaction is completed, instead of a stream that stays open with no end."""
    app = create_app(make_config())

    async def crashing(app: web.Application) -> AsyncIterator[None]:
        app[RESPONDER] = CrashingResponder()
        yield

    app.cleanup_ctx.append(crashing)
    iid, events = await ask(await aiohttp_client(app))
    assert [event.event for event in events] == [
        "prompt_ready",
        "first_token",
        "chunk",
        "error",
        "latency",
        "done",
    ]
    assert events[3].data["code"] == "responder_failed"
    assert "bug" not in events[3].data["message"]
    assert events[-1].data["meta"]["finishReason"] == "error"
    assert await finish_reason_in_target(db, iid) == "error"
