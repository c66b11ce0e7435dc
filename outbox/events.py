"""What goes into the outbox: one event per target row write."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class OutboxEvent:
    """A target row to write, keyed by the row's own id so that every write is idempotent. `group_key` ties
    a child row to its parent (a parent carries its own key), to release waiting children at once."""

    kind: str
    key: uuid.UUID
    group_key: uuid.UUID
    payload: dict[str, Any]
    dedupe_key: str | None = None

    @cached_property
    def key_text(self) -> str:
        """The key as text, formatted once: the writer sends it, matches what was inserted by it, and the
        caller answers with it."""
        return str(self.key)


@dataclass(frozen=True)
class EnqueueResult:
    """`inserted` is False when an event with the same key (or dedupe key) was already in the outbox."""

    event: OutboxEvent
    inserted: bool
