"""The ECO target's rows as outbox events: an interaction (created, then completed) and its signals."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from outbox.events import OutboxEvent


class Kind(enum.StrEnum):
    INTERACTION = "interaction"
    INTERACTION_COMPLETION = "interaction_completion"
    SIGNAL = "signal"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _column(sql_type: str, default: Any = None) -> Any:
    """A column of analytics.eco_interactions: its SQL type rides on the field, the one place it is named."""
    if isinstance(default, type):
        return field(default_factory=default, metadata={"sql": sql_type})
    return field(default=default, metadata={"sql": sql_type})


@dataclass(frozen=True)
class InteractionRow:
    """A row for analytics.eco_interactions: the ECO columns, plus meta. The target SQL takes its column
    list from these fields (`INTERACTION_COLUMNS`)."""

    id: uuid.UUID = field(metadata={"sql": "uuid"})
    created_at: datetime = field(metadata={"sql": "timestamptz"})
    user_id: uuid.UUID | None = _column("uuid")
    session_id: str | None = _column("text")
    message_id: str | None = _column("text")
    prompt_hash: str | None = _column("text")
    module_combo: list[str] | None = _column("text[]")
    tokens_in: int | None = _column("int")
    tokens_out: int | None = _column("int")
    latency_ms: int | None = _column("int")
    meta: dict[str, Any] = _column("jsonb", dict)

    def payload(self) -> dict[str, Any]:
        return {name: _json_value(getattr(self, name)) for name in INTERACTION_COLUMNS}


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return _iso(value)
    return value


# Column name -> SQL type, in the table's order.
INTERACTION_COLUMNS: dict[str, str] = {
    column.name: column.metadata["sql"] for column in fields(InteractionRow)
}


def signal_event(
    interaction_id: uuid.UUID,
    name: str,
    meta: dict[str, Any],
    *,
    signal_id: uuid.UUID | None = None,
    created_at: datetime | None = None,
) -> OutboxEvent:
    """A row for analytics.eco_passive_signals; its id is the event's key and the id the client is given."""
    key = signal_id or uuid.uuid4()
    payload = {
        "id": str(key),
        "created_at": _iso(created_at or datetime.now(UTC)),
        "interaction_id": str(interaction_id),
        "signal": name,
        "meta": meta,
    }
    return OutboxEvent(Kind.SIGNAL, key, interaction_id, payload)


def interaction_event(row: InteractionRow) -> OutboxEvent:
    """The interaction as it starts; a second one with the same message_id is refused by the outbox."""
    dedupe_key = f"message_id:{row.message_id}" if row.message_id else None
    return OutboxEvent(Kind.INTERACTION, row.id, row.id, row.payload(), dedupe_key)


def completion_event(row: InteractionRow) -> OutboxEvent:
    """The interaction as it ended (tokens, latency): the whole row, so it may even arrive first."""
    return OutboxEvent(Kind.INTERACTION_COMPLETION, row.id, row.id, row.payload())
