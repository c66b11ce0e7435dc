"""What goes into the outbox: one event per target row write."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class Kind(enum.StrEnum):
    INTERACTION = "interaction"
    INTERACTION_COMPLETION = "interaction_completion"
    SIGNAL = "signal"


# Interactions are delivered before signals, so a batch that holds both finds the parents in place.
DELIVERY_ORDER: tuple[Kind, ...] = (Kind.INTERACTION, Kind.INTERACTION_COMPLETION, Kind.SIGNAL)


@dataclass(frozen=True)
class OutboxEvent:
    """A target row to write, keyed by the row's own id so that every write is idempotent."""

    kind: Kind
    key: uuid.UUID
    interaction_id: uuid.UUID
    payload: dict[str, Any]
    dedupe_key: str | None = None


@dataclass(frozen=True)
class EnqueueResult:
    """`inserted` is False when an event with the same key (or dedupe key) was already in the outbox."""

    event: OutboxEvent
    inserted: bool


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


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


@dataclass(frozen=True)
class InteractionRow:
    """A row for analytics.eco_interactions (the ECO columns, plus meta)."""

    id: uuid.UUID
    created_at: datetime
    user_id: uuid.UUID | None = None
    session_id: str | None = None
    message_id: str | None = None
    prompt_hash: str | None = None
    module_combo: list[str] | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "user_id": str(self.user_id) if self.user_id else None,
            "session_id": self.session_id,
            "message_id": self.message_id,
            "prompt_hash": self.prompt_hash,
            "module_combo": self.module_combo,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "latency_ms": self.latency_ms,
            "created_at": _iso(self.created_at),
            "meta": self.meta,
        }


def interaction_event(row: InteractionRow) -> OutboxEvent:
    """The interaction as it starts; a second one with the same message_id is refused by the outbox."""
    dedupe_key = f"message_id:{row.message_id}" if row.message_id else None
    return OutboxEvent(Kind.INTERACTION, row.id, row.id, row.payload(), dedupe_key)


def completion_event(row: InteractionRow) -> OutboxEvent:
    """The interaction as it ended (tokens, latency): the whole row, so it may even arrive first."""
    return OutboxEvent(Kind.INTERACTION_COMPLETION, row.id, row.id, row.payload())
