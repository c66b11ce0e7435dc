"""POST /api/feedback and POST /api/module-usage: the ECO app's likes and dislikes, and the modules a reply
used; children of an interaction like signals, answered 204 once committed to the outbox."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from service.chat.schemas import ECO_ID_MAX_CHARS, MODULE_USAGE_SCHEMA, FeedbackInput, feedback_schema
from service.http.errors import ApiError, details_of
from service.http.headers import (
    HEADER_CLIENT_ID,
    HEADER_GUEST_ID,
    HEADER_PLAIN_GUEST_ID,
    HEADER_SESSION_ID,
    header_text,
)
from service.http.payload import JSON_TYPES, read_json
from service.http.views.links import enqueue_linked
from service.keys import CONFIG
from service.target.rows import feedback_event, module_usage_event


def _load(schema: Schema, body: Any) -> Any:
    """The body through `schema`; a 422 whose message names the first problem, which the app shows."""
    try:
        return schema.load(body)
    except ValidationError as exc:
        details = details_of(exc)
        field, messages = next(iter(details.items()))
        first = messages[0] if isinstance(messages, list) and messages else messages
        raise ApiError(422, "validation_failed", f"{field}: {first}", details=details) from exc


def _meta(meta: dict[str, Any], request: web.Request) -> dict[str, Any]:
    headers = {
        "guest_id_header": header_text(request, HEADER_GUEST_ID)
        or _short_header(request, HEADER_PLAIN_GUEST_ID),
        "session_id_header": header_text(request, HEADER_SESSION_ID),
        "client_id_header": _short_header(request, HEADER_CLIENT_ID),
    }
    return {**meta, **{key: value for key, value in headers.items() if value and key not in meta}}


def _short_header(request: web.Request, name: str) -> str | None:
    """A header the identity checks do not cover: kept only when it is short printable text."""
    value = request.headers.get(name, "").strip()
    return value if value and len(value) <= ECO_ID_MAX_CHARS and value.isprintable() else None


async def post_feedback(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body = await read_json(request, config.limits.signal_body_bytes, JSON_TYPES)
    feedback: FeedbackInput = _load(feedback_schema(config.limits), body)
    row = replace(
        feedback.row,
        meta=_meta(feedback.row.meta, request),
        session_id=feedback.row.session_id or header_text(request, HEADER_SESSION_ID),
    )
    await enqueue_linked(request, [feedback_event(row)], [feedback.link])
    return web.Response(status=204)


async def post_module_usage(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body = await read_json(request, config.limits.signal_body_bytes, JSON_TYPES)
    usage = _load(MODULE_USAGE_SCHEMA, body)
    event = module_usage_event(usage.parent, usage.module_key, usage.position, usage.tokens)
    await enqueue_linked(request, [event], [usage.link])
    return web.Response(status=204)
