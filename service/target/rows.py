"""The ECO target's rows as outbox events: an interaction (created, then completed) and its children (signals,
feedback, module usages), and the link that ties the app's local reply id to the interaction."""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from outbox.events import OutboxEvent


class Kind(enum.StrEnum):
    INTERACTION = "interaction"
    INTERACTION_COMPLETION = "interaction_completion"
    SIGNAL = "signal"
    MODULE_USAGE = "module_usage"
    FEEDBACK = "feedback"
    MESSAGE_LINK = "message_link"


# The children of an interaction, each waiting on it; a child the app filed under its local reply id waits
# for the link that names the interaction.
CHILD_KINDS = (Kind.SIGNAL, Kind.MODULE_USAGE, Kind.FEEDBACK)

# The app's own id of a reply, `eco-<uuid>`, sent as an interaction id before the real one is known.
LOCAL_REPLY_ID = re.compile(
    r"^eco-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)
_LOCAL_REPLY_NAMESPACE = uuid.UUID("5d0f4a8e-6b0b-4b8e-9c61-3f1f0d3c7a21")
_MODULE_USAGE_NAMESPACE = uuid.UUID("8a3c2b71-0e4f-4a55-b7d2-6c9e1f04b3d8")


def is_local_reply_id(value: str | None) -> bool:
    return value is not None and LOCAL_REPLY_ID.match(value) is not None


def local_group(local_id: str) -> uuid.UUID:
    """The outbox group of the rows filed under a local reply id, until the link names their interaction."""
    return uuid.uuid5(_LOCAL_REPLY_NAMESPACE, local_id.lower())


@dataclass(frozen=True)
class Parent:
    """Whom a child row belongs to: an interaction, or a local reply id not tied to one yet."""

    interaction_id: uuid.UUID | None = None
    local_id: str | None = None

    @property
    def group_key(self) -> uuid.UUID:
        if self.interaction_id is not None:
            return self.interaction_id
        assert self.local_id is not None
        return local_group(self.local_id)

    @property
    def key_text(self) -> str:
        return str(self.interaction_id) if self.interaction_id is not None else str(self.local_id).lower()

    def payload(self) -> dict[str, Any]:
        """The child's interaction_id: null while filed under a local id (the link's payload fills it)."""
        if self.interaction_id is not None:
            return {"interaction_id": str(self.interaction_id)}
        return {"interaction_id": None, "local_reply_id": str(self.local_id).lower()}


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
    interaction_id: uuid.UUID | Parent,
    name: str,
    meta: dict[str, Any],
    *,
    signal_id: uuid.UUID | None = None,
    created_at: datetime | None = None,
) -> OutboxEvent:
    """A row for analytics.eco_passive_signals; its id is the event's key and the id the client is given."""
    parent = interaction_id if isinstance(interaction_id, Parent) else Parent(interaction_id)
    key = signal_id or uuid.uuid4()
    payload = {
        "id": str(key),
        "created_at": _iso(created_at or datetime.now(UTC)),
        **parent.payload(),
        "signal": name,
        "meta": meta,
    }
    return OutboxEvent(Kind.SIGNAL, key, parent.group_key, payload)


def module_usage_event(
    parent: Parent, module_key: str, position: int | None, tokens: int | None
) -> OutboxEvent:
    """A row for analytics.eco_module_usages, keyed by (interaction, module, position): posted twice, it is
    stored once (the table has no unique constraint of its own)."""
    key = uuid.uuid5(_MODULE_USAGE_NAMESPACE, f"{parent.key_text}|{module_key}|{position}")
    payload = {
        "id": str(key),
        "created_at": _iso(datetime.now(UTC)),
        **parent.payload(),
        "module_key": module_key,
        "tokens": tokens,
        "position": position,
    }
    return OutboxEvent(Kind.MODULE_USAGE, key, parent.group_key, payload)


@dataclass(frozen=True)
class FeedbackRow:
    """A vote as received: analytics.eco_feedback's own columns; prompt_hash, and user_id and session_id
    when the interaction has them, come from the interaction when it is delivered."""

    parent: Parent
    vote: str
    reason: list[str] | None
    source: str | None
    meta: dict[str, Any]
    message_id: str | None
    arm: str | None
    pillar: str | None
    user_id: uuid.UUID | None
    session_id: str | None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    voted_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def feedback_event(row: FeedbackRow) -> OutboxEvent:
    """One vote: its eco_feedback row, and what its bandit reward and arm counts are computed from."""
    payload = {
        "id": str(row.id),
        **row.parent.payload(),
        "vote": row.vote,
        "reason": row.reason,
        "source": row.source,
        "meta": row.meta,
        "message_id": row.message_id,
        "arm": row.arm,
        "pillar": row.pillar,
        "user_id": str(row.user_id) if row.user_id else None,
        "session_id": row.session_id,
        "voted_at": _iso(row.voted_at),
    }
    return OutboxEvent(Kind.FEEDBACK, row.id, row.parent.group_key, payload)


def message_link_event(local_id: str, interaction_id: uuid.UUID) -> OutboxEvent:
    """The app's local reply id names its interaction: the rows filed under it move to the interaction,
    with this payload merged into theirs. The first link of a local id wins."""
    return OutboxEvent(
        Kind.MESSAGE_LINK,
        local_group(local_id),
        interaction_id,
        {"interaction_id": str(interaction_id)},
    )


def interaction_event(row: InteractionRow) -> OutboxEvent:
    """The interaction as it starts; a second one with the same message_id is refused by the outbox."""
    dedupe_key = f"message_id:{row.message_id}" if row.message_id else None
    return OutboxEvent(Kind.INTERACTION, row.id, row.id, row.payload(), dedupe_key)


def completion_event(row: InteractionRow) -> OutboxEvent:
    """The interaction as it ended (tokens, latency): the whole row, so it may even arrive first."""
    return OutboxEvent(Kind.INTERACTION_COMPLETION, row.id, row.id, row.payload())
