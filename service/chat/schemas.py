"""Request schemas (marshmallow 4), liberal as the ECO backend was: unknown fields are ignored, the ECO web
app's aliases are accepted, and a known field with a wrong type, a NUL or over a limit is still a 422. Limits
come from the configuration; see ../shared/ECO_CONTRACT.md for where each alias comes from."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates,
    validates_schema,
)

from service.chat.responder import ChatMessage
from service.config import Limits
from service.target.rows import LOCAL_REPLY_ID, FeedbackRow, Parent, is_local_reply_id

SIGNAL_NAME_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
SIGNAL_NAME = validate.Regexp(SIGNAL_NAME_PATTERN, error="may only hold letters, digits and _ . : -")
SIGNAL_TYPE_MAX_CHARS = 32
SIGNAL_TYPE_DEFAULT = "passive"
# Field metadata for the OpenAPI document: a request header may give the field instead of the body.
OR_HEADER = "x-or-header"
HEADER_SAFE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="must not contain control characters")
# Echoed back in the X-Eco-Client-Message-Id header; the header itself is held to the same bound.
CLIENT_MESSAGE_ID_MAX_CHARS = 128
# The ECO backend's bound on its session id; the other ids the app sends are held to it too.
ECO_ID_MAX_CHARS = 256


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


# The ECO extras of a signal, stored in its meta under these names as the ECO backend did. `message_id` is the
# ECO production app's local id of the reply (`eco-<uuid>`), or the message's.
SIGNAL_EXTRA_FIELDS = ("session_id", "response_id", "user_id", "guest_id", "message_id")


@dataclass(frozen=True)
class SignalInput:
    # None when the signal is filed under the app's local reply id (`local_reply_id`).
    interaction_id: uuid.UUID | None
    name: str
    type: str
    meta: dict[str, Any]
    value: float | None
    ts: datetime | None
    signal_id: uuid.UUID | None
    # session_id, response_id, user_id, guest_id, message_id when the client gave them.
    extras: dict[str, str] = field(default_factory=dict)
    local_reply_id: str | None = None

    @property
    def parent(self) -> Parent:
        return Parent(self.interaction_id, self.local_reply_id)

    @property
    def link(self) -> tuple[str, uuid.UUID] | None:
        """(local reply id, interaction id) when the signal ties the app's local id to its interaction."""
        return tie(self.extras.get("message_id"), self.interaction_id)


def tie(message_id: str | None, interaction_id: uuid.UUID | None) -> tuple[str, uuid.UUID] | None:
    """A request that gives the app's local reply id as `message_id` beside a real interaction id ties the
    two: the rows filed under the local id belong to that interaction."""
    if interaction_id is not None and is_local_reply_id(message_id):
        assert message_id is not None
        return message_id, interaction_id
    return None


def local_reply_alias(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """An interaction id that is the app's local reply id (`eco-<uuid>`) moves to `local_reply_id`, and the
    row is filed under it until a later request ties it to an interaction."""
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and is_local_reply_id(value.strip()):
            data = {key: item for key, item in data.items() if key not in names}
            data[names[0]] = None
            data["local_reply_id"] = value.strip().lower()
            break
    return data


def _eco_id() -> fields.String:
    return fields.String(allow_none=True, validate=validate.Length(max=ECO_ID_MAX_CHARS))


class AliasedSchema(Schema):
    """A schema whose concepts are one field each, accepted under every name ALIASES gives it.

    The one pre_load takes each concept from the first of its names that holds a value (one not in
    NOT_GIVEN), in the table's order; a later name that holds one too is still checked by the concept's
    field, so a wrong type is a 422 under whichever name it came. An error on the concept is reported under
    the name the client used (the table's first name when it gave none). Unknown fields are ignored.

    `Meta.description` and `Meta.one_of` (concepts of which one is required) are for the OpenAPI document."""

    class Meta:
        unknown = EXCLUDE
        one_of: tuple[str, ...] = ()

    NOT_GIVEN: ClassVar[tuple[Any, ...]] = (None,)

    def before_aliases(self, data: dict[str, Any]) -> dict[str, Any]:
        """What a schema does to the raw item before the table is applied."""
        return data

    @pre_load
    def _aliases(self, data: Any, **kwargs: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = self.before_aliases(dict(data))
        errors: dict[str, Any] = {}
        not_given = self.NOT_GIVEN
        for concept, names in aliases_of(type(self)).items():
            chosen = ...
            for name in names:
                if name not in data:
                    continue
                value = data.pop(name)
                if value in not_given:
                    if name == concept and chosen is ...:
                        chosen = value
                elif chosen is ... or chosen in not_given:
                    chosen = value
                else:
                    try:
                        self.fields[concept].deserialize(value)
                    except ValidationError as exc:
                        errors[name] = exc.messages
            if chosen is not ...:
                data[concept] = chosen
        if errors:
            raise ValidationError(errors)
        return data

    def handle_error(self, error: ValidationError, data: Any, *, many: bool, **kwargs: Any) -> None:
        """Name each concept's errors after the name the client gave it under."""
        if not isinstance(data, dict) or not isinstance(error.messages, dict):
            return
        given = {}
        for concept, names in aliases_of(type(self)).items():
            name = next((name for name in names if data.get(name) not in self.NOT_GIVEN), names[0])
            if name != concept and concept in error.messages:
                given[concept] = name
        if given:
            messages = {given.get(key, key): value for key, value in error.messages.items()}
            raise ValidationError(messages, data=data, valid_data=error.valid_data)


class SignalSchema(AliasedSchema):
    """One passive signal from the browser, with the ECO backend's aliases (`interactionId`; `signal` for
    `name`, which wins when both are given) and extras."""

    class Meta(AliasedSchema.Meta):
        description = (
            "One passive signal. `interaction_id` is required unless the X-Eco-Interaction-Id header gives "
            "it; the header wins. The ECO extras (session_id, response_id, user_id, guest_id, message_id) "
            "are kept in the stored meta. An interaction id that is the ECO app's local reply id "
            "(`eco-<uuid>`) holds the signal until a later request gives that id as `message_id` beside a "
            "uuid `interaction_id`. Unknown fields are ignored."
        )

    # The fields the ECO app's common signals give (`signal` reaches `name` through _aliases), which the
    # fast path (service/http/signal_fast_path.py) loads without marshmallow; any other sends it here.
    COMMON_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"interaction_id", "name", "type", "meta", "value", "ts", "signal_id", "session_id", "message_id"}
    )

    # A uuid, or the app's local reply id (`eco-<uuid>`), which _aliases moves to `local_reply_id`.
    interaction_id = fields.UUID(required=True, allow_none=True, metadata={OR_HEADER: True})
    name = fields.String(required=True, validate=[validate.Length(min=1), SIGNAL_NAME])
    type = fields.String(
        load_default=SIGNAL_TYPE_DEFAULT,
        validate=[validate.Length(min=1, max=SIGNAL_TYPE_MAX_CHARS), SIGNAL_NAME],
    )
    meta = fields.Dict(keys=fields.String(), load_default=dict)
    value = FiniteFloat(allow_nan=False, allow_none=True, load_default=None)
    ts = fields.AwareDateTime(allow_none=True, load_default=None)
    signal_id = fields.UUID(allow_none=True, load_default=None)
    session_id = _eco_id()
    response_id = _eco_id()
    user_id = _eco_id()
    guest_id = _eco_id()
    message_id = _eco_id()
    local_reply_id = fields.String(
        load_default=None,
        validate=validate.Regexp(LOCAL_REPLY_ID),
        metadata={"description": "set from interaction_id when it is the app's eco-<uuid>"},
    )

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits

    def before_aliases(self, data: dict[str, Any]) -> dict[str, Any]:
        return local_reply_alias(data, aliases_of(SignalSchema)["interaction_id"])

    @validates("name")
    def _name_length(self, value: str, **kwargs: Any) -> None:
        if len(value) > self.limits.signal_name_chars:
            raise ValidationError(f"longer than {self.limits.signal_name_chars} characters")

    @validates("meta")
    def _meta_bounds(self, value: dict[str, Any], **kwargs: Any) -> None:
        check_meta_bounds(value, self.limits)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> SignalInput:
        if data["interaction_id"] is None and data["local_reply_id"] is None:
            raise ValidationError("Field may not be null.", "interaction_id")
        extras = {}
        for stored in SIGNAL_EXTRA_FIELDS:
            if (value := data.get(stored)) is not None:
                extras[stored] = value
        return SignalInput(
            interaction_id=data["interaction_id"],
            name=data["name"],
            type=data["type"],
            meta=data["meta"],
            value=data["value"],
            ts=data["ts"],
            signal_id=data["signal_id"],
            extras=extras,
            local_reply_id=data["local_reply_id"],
        )


# The meta's size is counted as it is stored (compact, UTF-8); built once, as json.dumps given options is not.
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def check_meta_bounds(value: dict[str, Any], limits: Limits) -> None:
    if json_depth(value) > limits.signal_meta_depth:
        raise ValidationError(f"nested deeper than {limits.signal_meta_depth} levels")
    size = len(_COMPACT_JSON.encode(value).encode("utf-8"))
    if size > limits.signal_meta_bytes:
        raise ValidationError(f"larger than {limits.signal_meta_bytes} bytes as JSON")


class ChatMessageSchema(AliasedSchema):
    """One history item: `role` defaults to user; the text is under any of its names, the first that is not
    empty wins."""

    NOT_GIVEN = (None, "")

    role = fields.String(load_default="user", validate=validate.OneOf(["user", "assistant", "system"]))
    content = fields.String(load_default="", allow_none=True)
    id = fields.String(
        allow_none=True, validate=[validate.Length(min=1, max=CLIENT_MESSAGE_ID_MAX_CHARS), HEADER_SAFE]
    )

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> ChatItem:
        return ChatItem(ChatMessage(data["role"], data["content"] or ""), data.get("id"))


@dataclass(frozen=True)
class ChatItem:
    message: ChatMessage
    id: str | None


@dataclass(frozen=True)
class AskInput:
    messages: list[ChatMessage]
    client_message_id: str | None
    user_id: uuid.UUID | None
    stream: bool | None
    # The ECO extras the interaction's meta keeps (sessionMeta, clientHour, isGuest, guestId).
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.messages[-1].content


def _client_message_id() -> fields.String:
    # Echoed back in the X-Eco-Client-Message-Id header, where a control character cannot go.
    return fields.String(
        allow_none=True, validate=[validate.Length(min=1, max=CLIENT_MESSAGE_ID_MAX_CHARS), HEADER_SAFE]
    )


def _history() -> fields.List:
    return fields.List(
        fields.Nested(ChatMessageSchema), allow_none=True, validate=validate.Length(min=1, max=200)
    )


def _user_id() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=validate.Length(max=ECO_ID_MAX_CHARS),
        metadata={"description": "a uuid; any other value is dropped (stored as null), not refused"},
    )


# What marshmallow's Boolean takes, as the ECO backend read these flags: true/false, 1/0, "true", "yes"…
# (apispec adds "null" to a nullable field's types.)
BOOLEAN_TYPES = ("boolean", "integer", "string")


def as_uuid(value: str | None) -> uuid.UUID | None:
    """The uuid in `value`, or None: the ECO app may send a user id that is not one, and loses nothing."""
    if value is None:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


class AskSchema(AliasedSchema):
    """An ask as the ECO web app sends it: a `messages`/`mensagens` history whose last non-empty user message
    is the prompt, otherwise `text`, `texto`, `mensagem` or `message`; ids and extras under their aliases."""

    class Meta(AliasedSchema.Meta):
        one_of = ("messages", "text")
        description = (
            "An ask as the ECO web app sends it. The prompt is the last non-empty user message of `messages` "
            "(an item's text is under content, text, mensagem, message, delta or value, and `role` defaults "
            "to user), otherwise `text`. The client message id is the X-Eco-Client-Message-Id header, then "
            "the body's, then the last `messages[].id`. The user is the body's, or the X-Eco-User-Id header "
            "(not a uuid: dropped); `isGuest` truthy means no user. The interaction's meta keeps "
            "sessionMeta, clientHour, isGuest and guestId. Unknown fields are ignored."
        )

    messages = _history()
    text = fields.String(allow_none=True)
    client_message_id = _client_message_id()
    user_id = _user_id()
    isGuest = fields.Boolean(
        allow_none=True,
        metadata={"description": "truthy: the interaction has no user", "type": list(BOOLEAN_TYPES)},
    )
    guestId = fields.String(allow_none=True, validate=validate.Length(max=ECO_ID_MAX_CHARS))
    nome_usuario = fields.String(allow_none=True, validate=validate.Length(max=ECO_ID_MAX_CHARS))
    contexto = fields.Dict(keys=fields.String(), allow_none=True)
    sessionMeta = fields.Dict(keys=fields.String(), allow_none=True)
    clientHour = FiniteFloat(allow_nan=False, allow_none=True)
    stream = fields.Boolean(
        allow_none=True,
        metadata={
            "description": 'true, 1, "true", "1" or "yes" choose the stream',
            "type": list(BOOLEAN_TYPES),
        },
    )

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits

    @validates("sessionMeta")
    def _session_meta_bounds(self, value: dict[str, Any] | None, **kwargs: Any) -> None:
        if value is not None:
            check_meta_bounds(value, self.limits)

    @validates_schema(skip_on_field_errors=True)
    def _one_prompt(self, data: dict[str, Any], **kwargs: Any) -> None:
        prompt = _prompt(data)
        if prompt is None:
            history, direct = (aliases_of(AskSchema)[concept] for concept in ("messages", "text"))
            raise ValidationError(
                f"give {_either(history)} with a user message, or {_either(direct)}", "message"
            )
        if not prompt.strip():
            raise ValidationError("must not be blank", "message")
        if len(prompt) > self.limits.ask_message_chars:
            raise ValidationError(f"longer than {self.limits.ask_message_chars} characters", "message")

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> AskInput:
        items: list[ChatItem] = data.get("messages") or []
        users = [i for i, item in enumerate(items) if item.message.role == "user" and item.message.content]
        if users:
            # The last non-empty user message is the prompt; anything after it, and empty items, are dropped.
            items = [item for item in items[: users[-1] + 1] if item.message.content]
            history = [item.message for item in items]
        else:
            history = [ChatMessage("user", data.get("text"))]
        client_message_id = data.get("client_message_id")
        if client_message_id is None:
            client_message_id = next((item.id for item in reversed(items) if item.id is not None), None)
        is_guest = bool(data.get("isGuest"))
        user_id = None if is_guest else as_uuid(data.get("user_id"))
        extras = {
            "sessionMeta": data.get("sessionMeta"),
            "clientHour": data.get("clientHour"),
            "isGuest": data.get("isGuest"),
            "guestId": data.get("guestId"),
        }
        meta = {key: value for key, value in extras.items() if value is not None}
        return AskInput(history, client_message_id, user_id, data.get("stream"), meta)


def _prompt(data: dict[str, Any]) -> str | None:
    items: list[ChatItem] = data.get("messages") or []
    users = [item.message.content for item in items if item.message.role == "user" and item.message.content]
    if users:
        return users[-1]
    return data.get("text")


def _either(names: tuple[str, ...]) -> str:
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


# Votes as the ECO backend read them.
VOTES = {"up": "up", "like": "up", "down": "down", "dislike": "down"}
MODULE_KEY = validate.Regexp(SIGNAL_NAME_PATTERN, error="may only hold letters, digits and _ . : -")
REASON_MAX_ITEMS = 16


class Reasons(fields.Field):
    """`reason` as the apps send it: a string, a list of strings, or null; stored as a list (text[])."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str] | None:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValidationError("must be a string, a list of strings, or null")
        if len(items) > REASON_MAX_ITEMS:
            raise ValidationError(f"holds at most {REASON_MAX_ITEMS} reasons")
        if any(len(item) > ECO_ID_MAX_CHARS for item in items):
            raise ValidationError(f"a reason is at most {ECO_ID_MAX_CHARS} characters")
        cleaned = [item.strip() for item in items if item.strip()]
        return cleaned or None


def _interaction_ref(required: bool = False) -> fields.String:
    return fields.String(
        required=required,
        allow_none=True,
        validate=validate.Length(max=ECO_ID_MAX_CHARS),
        metadata={"description": "a uuid, or the app's local reply id eco-<uuid>"},
    )


def _parent(data: dict[str, Any]) -> Parent:
    """The interaction a child row belongs to, or the local reply id it is filed under until tied."""
    raw = data.get("interaction_id")
    if raw is None or not raw.strip():
        raise ValidationError("Missing data for required field.", "interaction_id")
    value = raw.strip()
    if is_local_reply_id(value):
        return Parent(local_id=value.lower())
    try:
        return Parent(uuid.UUID(value))
    except ValueError:
        raise ValidationError(
            "must be a uuid or the app's local reply id (eco-<uuid>)", "interaction_id"
        ) from None


@dataclass(frozen=True)
class FeedbackInput:
    row: FeedbackRow
    # The app's local reply id given beside the real interaction id.
    link: tuple[str, uuid.UUID] | None


class FeedbackSchema(AliasedSchema):
    """A like or dislike, as the production app and the ECO backend's client send it."""

    class Meta(AliasedSchema.Meta):
        description = (
            "A vote on a reply: `vote` up, down, like or dislike. Lands as one eco_feedback row, the reward "
            "of (interaction, arm) in bandit_rewards (the latest vote's), counted once in eco_bandit_arms. "
            "The arm is `arm`, else the interaction's first module usage, else `baseline`. An interaction "
            "id that is the app's local reply id (`eco-<uuid>`) is held until tied; `message_id` set to that "
            "id beside a uuid interaction_id ties it. Unknown fields are ignored."
        )

    interaction_id = _interaction_ref(required=True)
    vote = fields.String(required=True, metadata={"description": "up, down, like or dislike"})
    reason = Reasons(
        allow_none=True,
        load_default=None,
        metadata={
            "type": ["string", "array"],
            "items": {"type": "string"},
            "description": "a string, a list of strings, or null; stored as a list",
        },
    )
    source = fields.String(allow_none=True, validate=validate.Length(max=SIGNAL_TYPE_MAX_CHARS * 2))
    meta = fields.Dict(keys=fields.String(), allow_none=True, load_default=None)
    message_id = _eco_id()
    response_id = _eco_id()
    pillar = fields.String(allow_none=True, validate=validate.Length(max=SIGNAL_TYPE_MAX_CHARS * 2))
    arm = fields.String(allow_none=True, validate=validate.Length(max=ECO_ID_MAX_CHARS))
    session_id = _eco_id()
    user_id = _user_id()

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits

    @validates("vote")
    def _vote(self, value: str, **kwargs: Any) -> None:
        if value.strip().lower() not in VOTES:
            raise ValidationError("must be up, down, like or dislike")

    @validates("meta")
    def _meta_bounds(self, value: dict[str, Any] | None, **kwargs: Any) -> None:
        if value is not None:
            check_meta_bounds(value, self.limits)

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> FeedbackInput:
        parent = _parent(data)
        message_id = data.get("message_id")
        row = FeedbackRow(
            parent=parent,
            vote=VOTES[data["vote"].strip().lower()],
            reason=data["reason"],
            source=data.get("source"),
            meta=data["meta"] or {},
            message_id=data.get("response_id") or message_id,
            arm=(data.get("arm") or "").strip() or None,
            pillar=(data.get("pillar") or "").strip() or None,
            user_id=as_uuid(data.get("user_id")),
            session_id=data.get("session_id"),
        )
        return FeedbackInput(row, tie(message_id, parent.interaction_id))


@dataclass(frozen=True)
class ModuleUsageInput:
    parent: Parent
    module_key: str
    position: int | None
    tokens: int | None
    link: tuple[str, uuid.UUID] | None


def _count() -> fields.Integer:
    return fields.Integer(allow_none=True, validate=validate.Range(min=0, max=2**31 - 1))


class ModuleUsageSchema(AliasedSchema):
    """One module a reply used, as the production app sends it (camelCase) or the ECO backend read it."""

    class Meta(AliasedSchema.Meta):
        description = (
            "One module of a reply, camelCase (the production app) or snake_case (the ECO backend's names). "
            "Unknown fields are ignored."
        )

    module_key = fields.String(
        required=True, allow_none=True, validate=[validate.Length(min=1, max=128), MODULE_KEY]
    )
    position = _count()
    tokens = _count()
    interaction_id = _interaction_ref(required=True)
    message_id = _eco_id()
    session_id = _eco_id()

    @post_load
    def _make(self, data: dict[str, Any], **kwargs: Any) -> ModuleUsageInput:
        module_key = data.get("module_key")
        if module_key is None:
            raise ValidationError("Missing data for required field.", "moduleKey")
        parent = _parent(data)
        return ModuleUsageInput(
            parent=parent,
            module_key=module_key,
            position=data.get("position"),
            tokens=data.get("tokens"),
            link=tie(data.get("message_id"), parent.interaction_id),
        )


# Every name each concept is accepted under, by schema and concept (the field), first given wins
# (ECO_CONTRACT.md). A concept not named here is accepted under its field's name alone. The OpenAPI document
# lists each name (service/http/openapi.py).
ALIASES: dict[type[AliasedSchema], dict[str, tuple[str, ...]]] = {
    # Where a history item's text may be (the ECO backend's list).
    ChatMessageSchema: {"content": ("content", "text", "mensagem", "message", "delta", "value")},
    SignalSchema: {
        "interaction_id": ("interaction_id", "interactionId"),
        "name": ("name", "signal"),
        "response_id": ("response_id", "responseId"),
        "user_id": ("user_id", "userId"),
        "guest_id": ("guest_id", "guestId"),
        "message_id": ("message_id", "messageId"),
    },
    AskSchema: {
        "messages": ("messages", "mensagens"),
        "text": ("text", "texto", "mensagem", "message"),
        "client_message_id": ("clientMessageId", "client_message_id", "messageId", "message_id"),
        "user_id": ("usuario_id", "usuarioId", "user_id", "userId"),
        "clientHour": ("clientHour", "client_hour"),
    },
    FeedbackSchema: {
        "interaction_id": ("interaction_id", "interactionId"),
        "message_id": ("message_id", "messageId"),
        "response_id": ("response_id", "responseId"),
        "session_id": ("session_id", "sessionId"),
        "user_id": ("user_id", "userId"),
    },
    ModuleUsageSchema: {
        "module_key": ("moduleKey", "module_key"),
        "interaction_id": ("interactionId", "interaction_id"),
        "message_id": ("messageId", "message_id"),
        "session_id": ("sessionId", "session_id"),
    },
}


@functools.cache
def aliases_of(schema: type[Schema]) -> dict[str, tuple[str, ...]]:
    """The concepts of `schema` (or of the schema it extends) that have other names (looked up once per
    class: each signal asks twice)."""
    return next((ALIASES[klass] for klass in schema.__mro__ if klass in ALIASES), {})


# The names each ECO extra of a signal is accepted under.
SIGNAL_EXTRAS = tuple(
    (stored, ALIASES[SignalSchema].get(stored, (stored,))) for stored in SIGNAL_EXTRA_FIELDS
)


@functools.cache
def signal_schema(limits: Limits) -> SignalSchema:
    """One schema per set of limits, built once: building one costs more than loading a signal."""
    return SignalSchema(limits)


@functools.cache
def feedback_schema(limits: Limits) -> FeedbackSchema:
    return FeedbackSchema(limits)


MODULE_USAGE_SCHEMA = ModuleUsageSchema()


@functools.cache
def ask_schema(limits: Limits) -> AskSchema:
    """One schema per set of limits, built once: building one costs more than loading an ask."""
    return AskSchema(limits)
