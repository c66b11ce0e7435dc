"""Request schemas (marshmallow 4). Unknown fields are rejected; limits come from the configuration."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from service.config import Limits
from service.responder import ChatMessage

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
SIGNAL_NAME = validate.Regexp(SIGNAL_NAME_PATTERN, error="may only hold letters, digits and _ . : -")
SIGNAL_TYPE_MAX_CHARS = 32
SIGNAL_TYPE_DEFAULT = "passive"
HEADER_SAFE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="must not contain control characters")


class FiniteFloat(fields.Float):
    """A float that is finite; an integer too large for a float is a validation error, not a crash."""

    def _validated(self, value: Any) -> float:
        try:
            return super()._validated(value)
        except OverflowError as exc:
            raise self.make_error("invalid") from exc


def json_depth(value: Any) -> int:
    depth = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in item)
    return depth


@dataclass(frozen=True)
class SignalInput:
    interaction_id: uuid.UUID
    name: str
    type: str
    meta: dict[str, Any]
    value: float | None
    ts: datetime | None
    signal_id: uuid.UUID | None


class SignalSchema(Schema):
    """One passive signal from the browser (`signal` is accepted as another name for `name`)."""

    interaction_id = fields.UUID(required=True)
    name = fields.String(required=True, validate=[validate.Length(min=1), SIGNAL_NAME])
    type = fields.String(
        load_default=SIGNAL_TYPE_DEFAULT,
        validate=[validate.Length(min=1, max=SIGNAL_TYPE_MAX_CHARS), SIGNAL_NAME],
    )
    meta = fields.Dict(keys=fields.String(), load_default=dict)
    value = FiniteFloat(allow_nan=False, allow_none=True, load_default=None)
    ts = fields.AwareDateTime(allow_none=True, load_default=None)
    signal_id = fields.UUID(allow_none=True, load_default=None)

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits

    @pre_load
    def _alias_signal(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict) and "signal" in data:
            data = dict(data)
            alias = data.pop("signal")
            if "name" in data and data["name"] != alias:
                raise ValidationError("give `name` or `signal`, not two different values", "signal")
            data["name"] = alias
        return data

    @validates("name")
    def _name_length(self, value: str, **kwargs: Any) -> None:
        if len(value) > self.limits.signal_name_chars:
            raise ValidationError(f"longer than {self.limits.signal_name_chars} characters")

    @validates("meta")
    def _meta_bounds(self, value: dict[str, Any], **kwargs: Any) -> None:
        if json_depth(value) > self.limits.signal_meta_depth:
            raise ValidationError(f"nested deeper than {self.limits.signal_meta_depth} levels")
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        if size > self.limits.signal_meta_bytes:
            raise ValidationError(f"larger than {self.limits.signal_meta_bytes} bytes as JSON")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> SignalInput:
        return SignalInput(**data)


class ChatMessageSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant", "system"]))
    content = fields.String(required=True)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> ChatMessage:
        return ChatMessage(**data)


@dataclass(frozen=True)
class AskInput:
    messages: list[ChatMessage]
    client_message_id: str | None
    user_id: uuid.UUID | None
    stream: bool | None

    @property
    def prompt(self) -> str:
        return self.messages[-1].content


class AskSchema(Schema):
    """An ask: `message` (or `text`, `mensagem`), or a `messages` history whose last user message counts."""

    message = fields.String()
    text = fields.String()
    mensagem = fields.String()
    messages = fields.List(fields.Nested(ChatMessageSchema), validate=validate.Length(min=1, max=200))
    # Echoed back in the X-Eco-Client-Message-Id header, where a control character cannot go.
    client_message_id = fields.String(
        allow_none=True, validate=[validate.Length(min=1, max=128), HEADER_SAFE]
    )
    user_id = fields.UUID(allow_none=True)
    stream = fields.Boolean(allow_none=True)

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits

    @validates_schema(skip_on_field_errors=True)
    def _one_prompt(self, data: dict[str, Any], **kwargs: Any) -> None:
        prompt = _prompt(data)
        if prompt is None:
            raise ValidationError(
                "give `message` (or `text`, `mensagem`) or `messages` with a user message", "message"
            )
        if not prompt.strip():
            raise ValidationError("must not be blank", "message")
        if len(prompt) > self.limits.ask_message_chars:
            raise ValidationError(f"longer than {self.limits.ask_message_chars} characters", "message")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> AskInput:
        history: list[ChatMessage] = list(data.get("messages") or [])
        direct = next((data[k] for k in ("message", "text", "mensagem") if data.get(k) is not None), None)
        if direct is not None:
            history.append(ChatMessage("user", direct))
        else:
            # The last user message is the prompt; anything after it is dropped.
            last_user = max(i for i, m in enumerate(history) if m.role == "user")
            history = history[: last_user + 1]
        return AskInput(history, data.get("client_message_id"), data.get("user_id"), data.get("stream"))


def _prompt(data: dict[str, Any]) -> str | None:
    for key in ("message", "text", "mensagem"):
        if data.get(key) is not None:
            return str(data[key])
    users = [m for m in data.get("messages") or [] if m.role == "user"]
    return users[-1].content if users else None


@functools.cache
def signal_schema(limits: Limits) -> SignalSchema:
    """One schema per set of limits, built once: building one costs more than loading a signal."""
    return SignalSchema(limits)


@functools.cache
def ask_schema(limits: Limits) -> AskSchema:
    """One schema per set of limits, built once: building one costs more than loading an ask."""
    return AskSchema(limits)
