"""GET /api/interactions/{interaction_id}/signals: where an interaction's signals are, live from the
outbox."""

from __future__ import annotations

import uuid

from aiohttp import hdrs, web

from outbox.status import EventStatus, group_status
from service.http.api_schemas import InteractionSignalsSchema
from service.http.errors import ApiError, validation_failed
from service.keys import DATABASES
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import SIGNAL_NAME_FIELD, SIGNAL_TYPE_FIELD
from service.target.rows import Kind

_DOCUMENT = InteractionSignalsSchema()
# The answer's bound: an interaction with more rows gets its oldest ones and `truncated: true`.
STATUS_MAX_ROWS = 500
INTERACTION_KINDS = (Kind.INTERACTION, Kind.INTERACTION_COMPLETION)


async def interaction_signals(request: web.Request) -> web.Response:
    """Each signal's id, name, state (pending, delivered, dead) and attempts; 404 when the outbox knows
    nothing of the interaction (never asked here, or its rows were purged after the retention period).
    Rate-limited per client like intake: it reads the database on every call and needs no credentials."""
    try:
        interaction_id = uuid.UUID(request.match_info["interaction_id"])
    except ValueError as exc:
        raise validation_failed({"interaction_id": ["Not a valid UUID."]}) from exc
    status = await group_status(request.app[DATABASES].outbox, OUTBOX_NAMES, interaction_id, STATUS_MAX_ROWS)
    if not status.events:
        raise ApiError(404, "not_found", "the outbox holds no rows for this interaction")
    document = _DOCUMENT.dump(
        {
            "interaction_id": interaction_id,
            "interaction": [event for event in status.events if event.kind in INTERACTION_KINDS],
            "signals": [_signal(event) for event in status.events if event.kind == Kind.SIGNAL],
            "truncated": status.truncated,
        }
    )
    return web.json_response(document, headers={hdrs.CACHE_CONTROL: "no-store"})


def _signal(event: EventStatus) -> dict[str, object]:
    """A signal's row with its name and meta.type, read from the target row the outbox holds (or, once
    delivered, from the fields of it the log keeps: ECO_TARGET's status fields)."""
    return {**vars(event), "name": event.field(SIGNAL_NAME_FIELD), "type": event.field(SIGNAL_TYPE_FIELD)}
