"""POST /api/signal: passive signals from the browser, answered 202 once committed to the outbox."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import ValidationError

from outbox.events import OutboxEvent
from service.chat.schemas import SignalInput, SignalSchema, signal_schema
from service.http.errors import validation_failed
from service.http.headers import (
    HEADER_GUEST_ID,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INTERACTION_ID,
    HEADER_SESSION_ID,
    header_interaction_ref,
    header_text,
    header_uuid,
)
from service.http.middleware import charge
from service.http.payload import BEACON_TYPES, read_json
from service.http.signal_fast_path import signal_fast_path
from service.http.views.links import enqueue_linked
from service.keys import CONFIG
from service.target.rows import signal_event


def _enriched_meta(signal: SignalInput, request: web.Request) -> dict[str, Any]:
    """The meta the ECO backend stored: the client's, its ECO extras, and the request's context; the
    header's guest id wins over the body's, and `guest_id_header` never overwrites the client's own."""
    guest_id = header_text(request, HEADER_GUEST_ID)
    extras = dict(signal.extras)
    if "guest_id" in extras and guest_id is not None:
        extras["guest_id"] = guest_id
    extra = {
        **extras,
        "type": signal.type,
        "ts": signal.ts.isoformat() if signal.ts else None,
        "value": signal.value,
        "session_id_header": header_text(request, HEADER_SESSION_ID),
    }
    meta = {**signal.meta, **{key: value for key, value in extra.items() if value is not None}}
    if guest_id is not None:
        meta.setdefault("guest_id_header", guest_id)
    return meta


def _load(schema: SignalSchema, item: Any, overrides: dict[str, str]) -> SignalInput:
    if overrides and isinstance(item, dict):
        item = {**item, **overrides}
    fast = signal_fast_path(schema)(item)
    return fast if fast is not None else schema.load(item)


def _queued(event: OutboxEvent) -> str:
    """What json.dumps makes of {"id": ..., "status": "queued"}, written out: an id needs no escapes, and
    this answer goes out thousands of times a second."""
    return f'{{"id": "{event.key_text}", "status": "queued"}}'


def _batch(body: Any) -> list[Any] | None:
    """The signals of a batch: a JSON array, or `{"events": [...]}` as the ECO production app sends several;
    None for a single signal."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list):
            raise validation_failed({"events": ["must be a list of signals"]})
        return events
    return None


async def post_signal(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    body = await read_json(request, config.limits.signal_body_bytes, BEACON_TYPES)
    overrides: dict[str, str] = {}
    if interaction_id := header_interaction_ref(request, HEADER_INTERACTION_ID):
        overrides["interaction_id"] = interaction_id
    idempotency_key = header_uuid(request, HEADER_IDEMPOTENCY_KEY)
    schema = signal_schema(config.limits)

    items = _batch(body)
    if items is not None:
        if not items:
            raise validation_failed({"_schema": ["a batch must hold at least one signal"]})
        if len(items) > config.limits.signal_batch_items:
            raise validation_failed(
                {"_schema": [f"a batch holds at most {config.limits.signal_batch_items}"]}
            )
        if idempotency_key:
            raise validation_failed({HEADER_IDEMPOTENCY_KEY: ["give signal_id per item in a batch"]})
        signals: list[SignalInput] = []
        errors: dict[str, Any] = {}
        for index, item in enumerate(items):
            try:
                signals.append(_load(schema, item, overrides))
            except ValidationError as exc:
                errors[str(index)] = exc.messages
        if errors:
            raise validation_failed(errors)
    else:
        if idempotency_key:
            overrides["signal_id"] = idempotency_key
        signals = [_load(schema, body, overrides)]

    # The middleware took one token for the request: the rate limit counts signals, not requests.
    if len(signals) > 1:
        charge(request, len(signals) - 1)
    events: list[OutboxEvent] = [
        signal_event(s.parent, s.name, _enriched_meta(s, request), signal_id=s.signal_id) for s in signals
    ]
    await enqueue_linked(request, events, [s.link for s in signals])
    answers = ", ".join(_queued(event) for event in events)
    return web.Response(
        text=f"[{answers}]" if items is not None else answers, status=202, content_type="application/json"
    )
