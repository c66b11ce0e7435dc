"""POST (and GET, for EventSource) /api/ask-eco: the reply as Server-Sent Events, or as one JSON object."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import replace

from aiohttp import hdrs, web
from aiohttp_sse import EventSourceResponse
from loguru import logger

from service.chat.interaction import (
    FINISH_CLIENT_DISCONNECT,
    FINISH_ERROR,
    DuplicateClientMessage,
    InteractionRun,
)
from service.chat.schemas import as_uuid, ask_schema
from service.http.errors import ApiError, validation_failed
from service.http.headers import (
    HEADER_CLIENT_MESSAGE_ID,
    HEADER_GUEST_ID,
    HEADER_INTERACTION_ID,
    HEADER_SESSION_ID,
    HEADER_STREAM_ID,
    HEADER_USER_ID,
    header_text,
)
from service.http.metrics import OPEN_STREAMS
from service.http.payload import check_text, parse_json, read_json
from service.keys import CONFIG, DATABASES, DEFERRED, RESPONDER, STREAMS, WRITER
from service.target.message_ids import target_holds_message_id

# `stream` (body or query) values that choose the stream, as the ECO backend read them.
STREAM_TRUE = frozenset({"true", "1", "yes"})
# Query parameters that carry JSON (GET, for EventSource, which cannot send a body).
QUERY_JSON_KEYS = ("messages", "mensagens")
QUERY_PAYLOAD = "payload"


def _wants_stream(request: web.Request, stream: bool | None) -> bool:
    return (
        request.method == "GET"
        or bool(stream)
        or request.query.get("stream", "").strip().lower() in STREAM_TRUE
        or "text/event-stream" in request.headers.get(hdrs.ACCEPT, "")
    )


def _query_json(name: str, raw: str) -> object:
    try:
        return parse_json(raw.encode("utf-8", "surrogatepass"))
    except ApiError as exc:
        raise validation_failed({name: [exc.message]}) from exc


def _query_body(query: Mapping[str, str]) -> dict[str, object]:
    """The ask a GET carries: `payload` as a whole JSON body, the other parameters over it."""
    body: dict[str, object] = {}
    if QUERY_PAYLOAD in query:
        payload = _query_json(QUERY_PAYLOAD, query[QUERY_PAYLOAD])
        if not isinstance(payload, dict):
            raise validation_failed({QUERY_PAYLOAD: ["must be a JSON object"]})
        body.update(payload)
    for name, value in query.items():
        if name in QUERY_JSON_KEYS:
            body[name] = _query_json(name, value)
        elif name != QUERY_PAYLOAD:
            body[name] = value
    check_text(body)
    return body


async def ask_eco(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    if request.method == "GET":
        body: object = _query_body(request.query)
    else:
        body = await read_json(request, config.limits.ask_body_bytes)
    ask = ask_schema(config.limits).load(body)
    user_id = ask.user_id
    if user_id is None and not ask.meta.get("isGuest"):
        user_id = as_uuid(header_text(request, HEADER_USER_ID))
    run = InteractionRun(
        request.app[WRITER],
        request.app[RESPONDER],
        replace(ask, user_id=user_id),
        deferred=request.app[DEFERRED],
        guest_id=header_text(request, HEADER_GUEST_ID) or str(uuid.uuid4()),
        session_id=header_text(request, HEADER_SESSION_ID) or str(uuid.uuid4()),
        client_message_id=header_text(request, HEADER_CLIENT_MESSAGE_ID) or ask.client_message_id,
    )
    try:
        if run.client_message_id and await target_holds_message_id(
            request.app[DATABASES].target, run.client_message_id
        ):
            raise DuplicateClientMessage(run.client_message_id)
        prompt_ready = await run.open()
    except DuplicateClientMessage as exc:
        raise ApiError(
            409, "duplicate_client_message_id", "an interaction with this client_message_id already exists"
        ) from exc
    if _wants_stream(request, ask.stream):
        return await _stream(request, run, prompt_ready)
    return await _json(run)


async def no_content(request: web.Request) -> web.Response:
    """HEAD and a plain OPTIONS (not a CORS preflight): the route is here, and nothing is started."""
    return web.Response(status=204)


def _answer_headers(run: InteractionRun) -> dict[str, str]:
    """The run's ids, which the ECO app reads from the answer (CORS exposes them)."""
    headers = {
        HEADER_INTERACTION_ID: str(run.interaction_id),
        HEADER_GUEST_ID: run.guest_id,
        HEADER_SESSION_ID: run.session_id,
        HEADER_STREAM_ID: str(run.stream_id),
    }
    if run.client_message_id:
        headers[HEADER_CLIENT_MESSAGE_ID] = run.client_message_id
    return headers


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
    return web.json_response(body, headers=_answer_headers(run))


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
        headers=_answer_headers(run),
        sep="\n",
        allow_all_methods=True,
        ping_interval=request.app[CONFIG].sse_ping_s,
        # A client that stops reading is cut off instead of holding the stream (and its buffer) open.
        send_timeout=request.app[CONFIG].sse_send_timeout_s,
    )
    streams.add(run)
    OPEN_STREAMS.inc()
    sequence = 0
    try:
        # Inside the try: a client that leaves before the stream starts still completes the interaction.
        await response.prepare(request)
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
