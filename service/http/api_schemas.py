"""The shapes of the API's answers (marshmallow 4), for the OpenAPI document and for dumping the status view.

Request schemas live in service/chat/schemas.py (and the admin ones in admin_schemas.py); these describe what
the handlers send back, so that /api/openapi.json is generated from code and a test holds the answers to it.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from outbox.tables import DEAD, DELIVERED, PENDING
from service.target.rows import Kind

STATES = (PENDING, DELIVERED, DEAD)


class ErrorSchema(Schema):
    error = fields.String(required=True, metadata={"description": "a stable code, e.g. validation_failed"})
    message = fields.String(required=True)
    details = fields.Dict(
        keys=fields.String(),
        metadata={"description": "validation_failed: the messages for each field (or item of a batch)"},
    )


class SignalAcceptedSchema(Schema):
    id = fields.UUID(
        required=True, metadata={"description": "the signal's id, also its row id in the target"}
    )
    status = fields.String(required=True, validate=validate.OneOf(["queued"]))


class UsageSchema(Schema):
    input_tokens = fields.Integer(required=True)
    output_tokens = fields.Integer(required=True)


def _module_combo() -> fields.List:
    return fields.List(
        fields.String(),
        required=True,
        metadata={"description": "the modules that shaped the reply, in order (the ECO app posts each one)"},
    )


class DoneMetaSchema(Schema):
    interaction_id = fields.UUID(
        required=True, metadata={"description": "where the ECO web app takes the id for its signals"}
    )
    finishReason = fields.String(
        required=True,
        metadata={"description": "stop, error, client_disconnect or server_shutdown"},
    )
    usage = fields.Nested(UsageSchema, required=True)
    module_combo = _module_combo()


class TokensSchema(Schema):
    # `in` is a Python keyword, so the attributes carry a suffix and data_key names the JSON field.
    in_ = fields.Integer(required=True, data_key="in")
    out_ = fields.Integer(required=True, data_key="out")


class TimingsSchema(Schema):
    first_token_latency_ms = fields.Integer(required=True, allow_none=True)
    total_latency_ms = fields.Integer(required=True)


class DonePayloadSchema(Schema):
    content = fields.String(required=True)
    interaction_id = fields.UUID(required=True)
    tokens = fields.Nested(TokensSchema, required=True)
    module_combo = _module_combo()
    timings = fields.Nested(TimingsSchema, required=True)
    at = fields.AwareDateTime(required=True)
    sinceStartMs = fields.Integer(required=True)


class AskErrorSchema(Schema):
    code = fields.String(required=True, metadata={"description": "e.g. upstream_timeout, upstream_status"})
    message = fields.String(required=True)


class AskResultSchema(Schema):
    """JSON mode: the `done` event's fields, and the error when the responder failed."""

    interaction_id = fields.UUID(required=True)
    content = fields.String(required=True)
    index = fields.Integer(required=True, metadata={"description": "how many chunks the reply had"})
    meta = fields.Nested(DoneMetaSchema, required=True)
    payload = fields.Nested(DonePayloadSchema, required=True)
    error = fields.Nested(AskErrorSchema)


def _event_type(name: str) -> fields.String:
    return fields.String(required=True, validate=validate.OneOf([name]))


class PromptReadyEventSchema(Schema):
    type = _event_type("prompt_ready")
    interaction_id = fields.UUID(required=True)
    streamId = fields.UUID(required=True)
    at = fields.Integer(required=True, metadata={"description": "epoch milliseconds"})
    sinceStartMs = fields.Integer(required=True)


class FirstTokenEventSchema(Schema):
    type = _event_type("first_token")
    latency_ms = fields.Integer(required=True)


class ChunkEventSchema(Schema):
    type = _event_type("chunk")
    index = fields.Integer(required=True)
    delta = fields.String(required=True)


class LatencyEventSchema(Schema):
    type = _event_type("latency")
    stage = fields.String(required=True, validate=validate.OneOf(["ttlc"]))
    at = fields.Integer(required=True, metadata={"description": "epoch milliseconds"})
    sinceStartMs = fields.Integer(required=True)
    first_token_latency_ms = fields.Integer(required=True, allow_none=True)
    total_latency_ms = fields.Integer(required=True)


class ErrorEventSchema(AskErrorSchema):
    type = _event_type("error")


class DoneEventSchema(Schema):
    type = _event_type("done")
    interaction_id = fields.UUID(required=True)
    content = fields.String(required=True)
    index = fields.Integer(required=True)
    at = fields.Integer(required=True, metadata={"description": "epoch milliseconds"})
    sinceStartMs = fields.Integer(required=True)
    timings = fields.Nested(TimingsSchema, required=True)
    meta = fields.Nested(DoneMetaSchema, required=True)
    payload = fields.Nested(DonePayloadSchema, required=True)


# The `data` of each SSE event of /api/ask-eco, by event name, in the order they may come.
SSE_EVENTS: dict[str, type[Schema]] = {
    "prompt_ready": PromptReadyEventSchema,
    "first_token": FirstTokenEventSchema,
    "chunk": ChunkEventSchema,
    "latency": LatencyEventSchema,
    "error": ErrorEventSchema,
    "done": DoneEventSchema,
}


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ApiHealthSchema(Schema):
    """GET /api/health when ready, in the ECO backend's shape (the ECO web app reads `ok`)."""

    ok = fields.Boolean(required=True, validate=validate.Equal(True))
    prompts = fields.String(required=True, validate=validate.OneOf(["ready"]))
    modulesIndexed = fields.Integer(
        required=True, metadata={"description": "the modules the responder's replies are named with"}
    )
    roots = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "folders prompt modules were read from: none"},
    )
    responder = fields.String(required=True, metadata={"description": "offline or openai"})
    checkedAt = fields.AwareDateTime(required=True)


class ApiHealthDownSchema(Schema):
    """GET /api/health when not ready (503): why, as /readyz's problems."""

    ok = fields.Boolean(required=True, validate=validate.Equal(False))
    reason = fields.String(required=True)


class LoopFailureSchema(Schema):
    class_ = fields.String(
        required=True,
        data_key="class",
        validate=validate.OneOf(["outage", "refused", "not_ready", "internal"]),
        metadata={
            "description": "outage (database unreachable), not_ready (every row would fail), internal (a bug)"
        },
    )
    error = fields.String(required=True, metadata={"description": "SQLSTATE and message"})


class LoopSchema(Schema):
    running = fields.Boolean(required=True)
    restarts = fields.Integer(required=True, metadata={"description": "times it died and was restarted"})
    consecutive_failures = fields.Integer(required=True, metadata={"description": "failed passes in a row"})
    last_failure = fields.Nested(LoopFailureSchema, required=True, allow_none=True)
    last_success_age_s = fields.Float(required=True, allow_none=True)


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "unavailable"]))
    problems = fields.List(fields.String(), metadata={"description": "why not ready (503 only)"})
    loops = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(LoopSchema),
        metadata={
            "description": "each outbox loop by name: outbox-relay-N, outbox-writer-N, listener, purger"
        },
    )


class EventStateSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf([kind.value for kind in Kind]))
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    attempts = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)
    delivered_at = fields.AwareDateTime(required=True, allow_none=True)


class SignalStateSchema(Schema):
    id = fields.UUID(required=True, attribute="key")
    name = fields.String(required=True)
    type = fields.String(
        required=True, allow_none=True, metadata={"description": "meta.type: passive, server…"}
    )
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    attempts = fields.Integer(required=True, metadata={"description": "delivery attempts so far"})
    created_at = fields.AwareDateTime(required=True)
    delivered_at = fields.AwareDateTime(required=True, allow_none=True)


class InteractionSignalsSchema(Schema):
    """The delivery state of one interaction's outbox rows (until the delivered ones are purged)."""

    interaction_id = fields.UUID(required=True)
    interaction = fields.List(
        fields.Nested(EventStateSchema),
        required=True,
        metadata={"description": "the interaction's own rows: created, then completed"},
    )
    signals = fields.List(fields.Nested(SignalStateSchema), required=True)
    truncated = fields.Boolean(
        required=True,
        metadata={"description": "true when the interaction has more rows than one answer holds (500)"},
    )


class KindCountSchema(Schema):
    rows = fields.Integer(required=True)
    oldest_age_s = fields.Float(required=True)


class OutboxStatsSchema(Schema):
    pending = fields.Dict(keys=fields.String(), values=fields.Nested(KindCountSchema), required=True)
    dead = fields.Dict(keys=fields.String(), values=fields.Nested(KindCountSchema), required=True)
    pending_total = fields.Integer(required=True)
    dead_total = fields.Integer(required=True)


class DeadLetterSchema(Schema):
    seq = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf([kind.value for kind in Kind]))
    key = fields.UUID(required=True)
    interaction_id = fields.UUID(required=True)
    attempts = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)
    dead_at = fields.AwareDateTime(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    payload = fields.Dict(required=True, metadata={"description": "the target row that was not delivered"})


class DeadLettersSchema(Schema):
    items = fields.List(fields.Nested(DeadLetterSchema), required=True)
    next_after_seq = fields.Integer(
        required=True, allow_none=True, metadata={"description": "pass as after_seq for the next page"}
    )


class RequeuedSchema(Schema):
    requeued = fields.List(fields.Integer(), required=True, metadata={"description": "the seqs requeued"})
    count = fields.Integer(required=True)


class PurgedSchema(Schema):
    purged = fields.Integer(required=True)


class LastBatchSchema(Schema):
    finished_at = fields.AwareDateTime(required=True)
    claimed = fields.Integer(required=True)
    delivered = fields.Integer(required=True)
    retried = fields.Integer(required=True)
    dead = fields.Integer(required=True)
    duration_s = fields.Float(required=True)


class FailureCountSchema(Schema):
    metric = fields.String(required=True, metadata={"description": "the Prometheus counter"})
    labels = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    count = fields.Integer(required=True)


class DeliveredPerSecondSchema(Schema):
    start_unix_s = fields.Integer(required=True, metadata={"description": "the second of counts[0]"})
    counts = fields.List(fields.Integer(), required=True, metadata={"description": "one per second, to now"})


class RelayStateSchema(Schema):
    """What this process's relay did lately, from memory: the admin page's relay card and chart."""

    running = fields.Boolean(required=True)
    loops = fields.Integer(required=True)
    last_batch = fields.Nested(LastBatchSchema, required=True, allow_none=True)
    failures = fields.List(fields.Nested(FailureCountSchema), required=True)
    delivered_per_s = fields.Nested(DeliveredPerSecondSchema, required=True)
