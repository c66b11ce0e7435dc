"""POST /api/ask-eco: the reply as Server-Sent Events, or as one JSON object."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import aclosing

from aiohttp import web
from aiohttp_sse import EventSourceResponse
from loguru import logger

from service.interaction import FINISH_CLIENT_DISCONNECT, FINISH_ERROR, InteractionRun
from service.keys import CONFIG, DEFERRED, RESPONDER, STREAMS, WRITER
from service.metrics import OPEN_STREAMS
from service.payload import read_json
from service.schemas import ask_schema


def _wants_stream(request: web.Request, stream: bool | None) -> bool:
    return bool(stream) or "text/event-stream" in request.headers.get("Accept", "")


async def ask_eco(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    body = await read_json(request, config.limits.ask_body_bytes)
    ask = ask_schema(config.limits).load(body)
    run = InteractionRun(
        request.app[WRITER],
        request.app[RESPONDER],
        ask,
        deferred=request.app[DEFERRED],
        guest_id=request.headers.get("X-Eco-Guest-Id") or f"guest_{uuid.uuid4()}",
        session_id=request.headers.get("X-Eco-Session-Id") or str(uuid.uuid4()),
        client_message_id=ask.client_message_id or request.headers.get("X-Eco-Client-Message-Id") or None,
    )
    prompt_ready = await run.open()
    if _wants_stream(request, ask.stream):
        return await _stream(request, run, prompt_ready)
    return await _json(run)


async def _json(run: InteractionRun) -> web.Response:
    done: dict[str, object] = {}
    error: dict[str, object] | None = None
    try:
        async with aclosing(run.events()) as events:
            async for name, data in events:
                if name == "done":
                    done = data
                elif name == "error":
                    error = {"code": data["code"], "message": data["message"]}
    except asyncio.CancelledError:
        await run.complete(FINISH_CLIENT_DISCONNECT)
        raise
    body = {key: done[key] for key in ("interaction_id", "content", "index", "meta", "payload")}
    if error is not None:
        body["error"] = error
    return web.json_response(body, headers=run.headers)


async def _send(response: EventSourceResponse, sequence: int, name: str, data: dict[str, object]) -> None:
    try:
        await response.send(json.dumps(data, ensure_ascii=False), id=str(sequence), event=name)
    except TimeoutError as exc:
        # aiohttp-sse aborted a client that read nothing for send_timeout: it is gone, as a reset one is.
        raise ConnectionResetError("the client stopped reading") from exc


async def _stream(
    request: web.Request, run: InteractionRun, prompt_ready: tuple[str, dict]
) -> web.StreamResponse:
    streams = request.app[STREAMS]
    response = EventSourceResponse(
        headers=run.headers,
        sep="\n",
        allow_all_methods=True,
        ping_interval=request.app[CONFIG].sse_ping_s,
        # A client that stops reading is cut off instead of holding the stream (and its buffer) open.
        send_timeout=request.app[CONFIG].sse_send_timeout_s,
    )
    await response.prepare(request)
    streams.add(run)
    OPEN_STREAMS.inc()
    sequence = 0
    try:
        async with response:
            try:
                async with aclosing(run.events()) as events:
                    name, data = prompt_ready
                    sequence += 1
                    await _send(response, sequence, name, data)
                    async for name, data in events:
                        sequence += 1
                        await _send(response, sequence, name, data)
            except (ConnectionResetError, asyncio.CancelledError):
                raise
            except Exception:
                # The status line is sent: a failure now ends this stream (error, then done); raised to the
                # error middleware, it would write a second HTTP response into the open body.
                logger.bind(interaction_id=str(run.interaction_id), code="stream_failed").exception(
                    "stream failed after its first byte"
                )
                try:
                    await run.complete(FINISH_ERROR)
                except Exception:
                    logger.bind(interaction_id=str(run.interaction_id), code="completion_failed").exception(
                        "the failed stream's completion was refused"
                    )
                for name, data in run.failure("stream_failed", "the reply could not be completed"):
                    sequence += 1
                    await _send(response, sequence, name, data)
    except asyncio.CancelledError:
        await run.complete(FINISH_CLIENT_DISCONNECT)
        raise
    except ConnectionResetError:
        await run.complete(FINISH_CLIENT_DISCONNECT)
    finally:
        streams.discard(run)
        OPEN_STREAMS.dec()
    return response
