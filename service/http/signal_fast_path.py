"""The common signal, validated without marshmallow: loading one through SignalSchema costs more than the
rest of the request's own work, and intake runs at thousands of signals a second.

`fast_signal` accepts only what SignalSchema accepts and returns the same SignalInput; anything it is not
sure about (a `ts`, a numeric string, an alias other than `signal`, an ECO extra other than `session_id`, an
unknown field, any field it would reject) returns None, and the caller loads it with the schema, which also
words the errors. tests/test_signal_fast_path.py holds the two to the same answers.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from marshmallow import ValidationError

from service.chat.schemas import (
    ECO_ID_MAX_CHARS,
    SIGNAL_NAME_PATTERN,
    SIGNAL_TYPE_DEFAULT,
    SIGNAL_TYPE_MAX_CHARS,
    SignalInput,
    check_meta_bounds,
)
from service.config import Limits

# The schema's fields this path reads, and `signal`, the alias the ECO web app names its lifecycle signals
# with (the most common signal of all); any other field is left to the schema.
FIELDS = frozenset(
    {"interaction_id", "name", "signal", "type", "meta", "value", "ts", "signal_id", "session_id"}
)
NAME = re.compile(SIGNAL_NAME_PATTERN)


def _uuid(value: Any) -> uuid.UUID | None:
    if type(value) is not str:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _name(value: Any, max_chars: int) -> str | None:
    if type(value) is not str or not 0 < len(value) <= max_chars or NAME.match(value) is None:
        return None
    return value


def _meta(value: Any, limits: Limits) -> dict[str, Any] | None:
    if type(value) is not dict:
        return None
    try:
        check_meta_bounds(value, limits)
    except ValidationError:
        return None
    return dict(value)


def fast_signal(item: Any, limits: Limits) -> SignalInput | None:
    """The SignalInput SignalSchema would load from `item`, or None to let the schema decide."""
    if type(item) is not dict or not item.keys() <= FIELDS or item.get("ts") is not None:
        return None
    interaction_id = _uuid(item.get("interaction_id"))
    # As the schema reads the alias: `name` wins; `signal` stands in when `name` is absent or null.
    name = _name(
        item["name"] if item.get("name") is not None else item.get("signal"), limits.signal_name_chars
    )
    kind = _name(item.get("type", SIGNAL_TYPE_DEFAULT), SIGNAL_TYPE_MAX_CHARS)
    meta = _meta(item.get("meta", {}), limits)
    if interaction_id is None or name is None or kind is None or meta is None:
        return None
    signal_id = item.get("signal_id")
    if signal_id is not None and (signal_id := _uuid(signal_id)) is None:
        return None
    value = item.get("value")
    if value is not None:
        if type(value) not in (int, float):
            return None
        try:
            value = float(value)
        except OverflowError:
            return None
        if not math.isfinite(value):
            return None
    session_id = item.get("session_id")
    if session_id is not None and (type(session_id) is not str or len(session_id) > ECO_ID_MAX_CHARS):
        return None
    extras = {"session_id": session_id} if session_id is not None else {}
    return SignalInput(interaction_id, name, kind, meta, value, None, signal_id, extras)
