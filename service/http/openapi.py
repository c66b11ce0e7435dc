"""The OpenAPI 3.1 document of every endpoint, generated with apispec from the marshmallow schemas.

Bodies come from the same schemas the handlers load (service/chat/schemas.py, service/http/admin_schemas.py)
and dump (service/http/api_schemas.py), sized by the configured limits; tests/test_openapi.py holds live
answers to it.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from service.chat.schemas import (
    OR_HEADER,
    AskSchema,
    FeedbackSchema,
    ModuleUsageSchema,
    SignalSchema,
    aliases_of,
)
from service.config import Limits
from service.http import api_schemas as out
from service.http.admin_schemas import DeadQuerySchema, PurgeDeadSchema, RequeueSchema

TITLE = "eco-outbox"
VERSION = "0.1.0"
DESCRIPTION = (
    "The ECO chat stream (`POST /api/ask-eco`, SSE or JSON) and passive-signal intake (`POST /api/signal`, "
    "also `/signal`), written to a transactional outbox and delivered to `analytics.*` by a relay."
)

JSON = "application/json"
SSE = "text/event-stream"
UUID_STRING = {"type": "string", "format": "uuid"}

IDENTITY_HEADERS = {
    "X-Eco-Guest-Id": "the guest; one is made up when absent",
    "X-Eco-Session-Id": "the session; one is made up when absent",
}


class AliasPlugin(MarshmallowPlugin):
    """MarshmallowPlugin, plus each concept's other names (ALIASES) as properties described as such; a
    required concept is required under any of its names, and not at all when a header may give it; one of
    the concepts in `Meta.one_of` is required."""

    def schema_helper(self, name: str, _: Any, schema: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        definition = super().schema_helper(name, _, schema=schema, **kwargs)
        if definition is None:
            return None
        schema_class = schema if isinstance(schema, type) else type(schema)
        aliases = aliases_of(schema_class)
        properties = definition["properties"]
        or_header = {field for field, prop in properties.items() if prop.pop(OR_HEADER, False)}
        required = [name for name in definition.get("required", []) if name not in or_header]
        alternatives = []
        for concept, names in aliases.items():
            field = properties[concept]
            for alias in names:
                if alias != concept:
                    properties[alias] = {**field, "description": f"another name for `{concept}`"}
            order = ", ".join(f"`{alias}`" for alias in names)
            described = [field["description"]] if "description" in field else []
            field["description"] = "; ".join([*described, f"given as {order}: the first given wins"])
            if concept in required:
                required.remove(concept)
                alternatives.append({"anyOf": [{"required": [alias]} for alias in names]})
        one_of = getattr(getattr(schema_class, "Meta", None), "one_of", ())
        if one_of:
            names = [name for concept in one_of for name in aliases.get(concept, (concept,))]
            alternatives.append({"anyOf": [{"required": [name]} for name in names]})
        definition["required"] = required
        if alternatives:
            definition["allOf"] = [*definition.get("allOf", []), *alternatives]
        if not required:
            definition.pop("required", None)
        return definition


def _header(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": "Error"}}}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}


def _client_errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "malformed JSON (syntax, encoding, an empty body)",
        401: "no bearer token",
        403: "a wrong bearer token, or the admin endpoints are off (ECO_ADMIN_TOKEN unset)",
        404: "nothing here",
        408: "`request_timeout`: the body did not arrive within ECO_BODY_TIMEOUT_S (the connection closes)",
        409: "an interaction with this client_message_id exists already",
        413: "the body is larger than the limit",
        415: "wrong Content-Type",
        422: "`validation_failed`: `details` names each field's problems (NUL characters included)",
    }
    responses = {str(status): _error(texts[status]) for status in statuses}
    if 401 in statuses:
        responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return responses


RATE_LIMITED = {"429": _error("too many requests from this client", RETRY_AFTER)}
UNAVAILABLE = {"503": _error("the database is unavailable; retry after Retry-After seconds", RETRY_AFTER)}


def _stream_headers() -> dict[str, Any]:
    described = {
        "X-Eco-Interaction-Id": (
            "the interaction, durable in the outbox before the first byte",
            UUID_STRING,
            True,
        ),
        "X-Eco-Guest-Id": ("the guest (the request's, or a new one)", {"type": "string"}, True),
        "X-Eco-Session-Id": ("the session (the request's, or a new one)", {"type": "string"}, True),
        "X-Stream-Id": ("this stream", UUID_STRING, True),
        "X-Eco-Client-Message-Id": ("echoed when given", {"type": "string"}, False),
    }
    return {
        name: {"description": text, "schema": schema, "required": required}
        for name, (text, schema, required) in described.items()
    }


def _ask_operation() -> dict[str, Any]:
    events = ", ".join(out.SSE_EVENTS)
    return {
        "summary": "Ask ECO: the reply as Server-Sent Events, or as one JSON object",
        "operationId": "askEco",
        "tags": ["chat"],
        "parameters": [
            *(_header(name, text) for name, text in IDENTITY_HEADERS.items()),
            _header(
                "X-Eco-Client-Message-Id",
                "idempotency of the ask; wins over the body's client message id (and its aliases)",
            ),
            _header("X-Eco-User-Id", "the user when the body names none; not a uuid is dropped"),
            _header("Authorization", "passed through, not checked (the ECO app sends its bearer token)"),
            _header("Accept", f"`{SSE}` streams (as does `stream: true`); anything else answers JSON"),
        ],
        "requestBody": {"required": True, "content": {JSON: {"schema": "Ask"}}},
        "responses": {
            "200": {
                "description": (
                    "The reply. SSE frames are `event: <name>`, `id: <n>`, `data: <json>`, with a comment "
                    f"line as keep-alive; the events ({events}) come in the order prompt_ready, first_token, "
                    "chunk*, latency, done — or an `error` before latency and done, whose finishReason is "
                    "then `error`. `x-sse-events` gives each event's data schema."
                ),
                "headers": _stream_headers(),
                "content": {
                    JSON: {"schema": "AskResult"},
                    SSE: {
                        "schema": {"type": "string", "description": "text/event-stream frames"},
                        "x-sse-events": {
                            name: {"$ref": _ref(schema)} for name, schema in out.SSE_EVENTS.items()
                        },
                    },
                },
            },
            **_client_errors(400, 408, 409, 413, 415, 422),
            **RATE_LIMITED,
            **UNAVAILABLE,
        },
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _ask_get_operation() -> dict[str, Any]:
    """GET, for a browser's EventSource (which cannot POST): the ask in the query, always streamed."""
    post = _ask_operation()
    stream = post["responses"]["200"]
    return {
        "summary": (
            "Ask ECO from a query, for EventSource: always a stream. HEAD, and OPTIONS without an Origin, "
            "answer 204 and start nothing."
        ),
        "operationId": "askEcoGet",
        "tags": ["chat"],
        "parameters": [
            *(_header(name, text) for name, text in IDENTITY_HEADERS.items()),
            *(_query(name, "the prompt") for name in aliases_of(AskSchema)["text"]),
            *(
                _query(name, "the history, as JSON (as the body's)")
                for name in aliases_of(AskSchema)["messages"]
            ),
            _query("payload", "a whole Ask body as JSON; the other parameters override its fields"),
            _query("client_message_id", "idempotency of the ask"),
            _query("usuario_id", "the user; not a uuid is dropped"),
            _query("nome_usuario", "the user's name (reaches the responder; never stored)"),
        ],
        "responses": {
            "200": {
                "description": stream["description"],
                "headers": stream["headers"],
                "content": {SSE: stream["content"][SSE]},
            },
            **_client_errors(409, 422),
            **RATE_LIMITED,
            **UNAVAILABLE,
        },
    }


def _signal_operation(limits: Limits, operation_id: str, summary: str) -> dict[str, Any]:
    batch = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Signal"},
        "minItems": 1,
        "maxItems": limits.signal_batch_items,
    }
    one_or_batch = {
        "oneOf": [
            {"$ref": "#/components/schemas/Signal"},
            batch,
            {
                "type": "object",
                "description": "a batch as the ECO production app sends it; other fields are ignored",
                "required": ["events"],
                "properties": {"events": batch},
            },
        ]
    }
    accepted = {
        "oneOf": [
            {"$ref": "#/components/schemas/SignalAccepted"},
            {"type": "array", "items": {"$ref": "#/components/schemas/SignalAccepted"}},
        ]
    }
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["signals"],
        "parameters": [
            *(_header(name, text) for name, text in IDENTITY_HEADERS.items()),
            _header("X-Eco-Interaction-Id", "wins over the body's interaction_id", UUID_STRING),
            _header("Idempotency-Key", "the signal_id of a single signal", UUID_STRING),
        ],
        "requestBody": {
            "required": True,
            "description": (
                'one signal, or a batch (an array, or `{"events": [...]}`); `text/plain` is what '
                "navigator.sendBeacon sends"
            ),
            "content": {JSON: {"schema": one_or_batch}, "text/plain": {"schema": one_or_batch}},
        },
        "responses": {
            "202": {
                "description": "queued: the signal (or each of the batch)",
                "content": {JSON: {"schema": accepted}},
            },
            **_client_errors(400, 408, 413, 415, 422),
            **RATE_LIMITED,
            **UNAVAILABLE,
        },
    }


def _child_operation(summary: str, operation_id: str, schema: str) -> dict[str, Any]:
    """POST /api/feedback, POST /api/module-usage: children of an interaction, as signals are."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["signals"],
        "parameters": [_header(name, text) for name, text in IDENTITY_HEADERS.items()],
        "requestBody": {"required": True, "content": {JSON: {"schema": f"#/components/schemas/{schema}"}}},
        "responses": {
            "204": {
                "description": "committed to the outbox; delivered once the interaction is in the target"
            },
            **_client_errors(400, 413, 415, 422),
            **RATE_LIMITED,
            **UNAVAILABLE,
        },
    }


def _admin(summary: str, operation_id: str, response: str, **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["admin"],
        "security": [{"adminToken": []}],
        **extra,
        "responses": {
            "200": {"description": "OK", "content": {JSON: {"schema": response}}},
            **_client_errors(401, 403, *((400, 408, 413, 415, 422) if "requestBody" in extra else (422,))),
            **UNAVAILABLE,
        },
    }


def _ref(schema: type) -> str:
    return f"#/components/schemas/{schema.__name__.removesuffix('Schema')}"


def _paths(limits: Limits) -> dict[str, dict[str, Any]]:
    interaction_id = {
        "name": "interaction_id",
        "in": "path",
        "required": True,
        "schema": UUID_STRING,
    }
    return {
        "/api/ask-eco": {"post": _ask_operation(), "get": _ask_get_operation()},
        "/api/signal": {
            "post": _signal_operation(
                limits,
                "postSignal",
                "Take passive signals: 202 once committed to the outbox (the interaction need not exist yet)",
            )
        },
        "/signal": {
            "post": _signal_operation(
                limits,
                "postSignalUnprefixed",
                "/api/signal under the path the ECO production app posts its passive signals to",
            )
        },
        "/api/feedback": {
            "post": _child_operation(
                "Take a like or dislike: 204 once committed (the interaction need not exist yet)",
                "postFeedback",
                "Feedback",
            )
        },
        "/api/module-usage": {
            "post": _child_operation(
                "Take a module a reply used: 204 once committed; stored once per (module, position)",
                "postModuleUsage",
                "ModuleUsage",
            )
        },
        "/api/interactions/{interaction_id}/signals": {
            "get": {
                "summary": "Delivery state of an interaction's signals (pending, delivered, dead; attempts)",
                "operationId": "interactionSignals",
                "tags": ["signals"],
                "parameters": [interaction_id],
                "responses": {
                    "200": {"description": "OK", "content": {JSON: {"schema": "InteractionSignals"}}},
                    **_client_errors(404, 422),
                    **RATE_LIMITED,
                    **UNAVAILABLE,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "operationId": "healthz",
                "tags": ["operations"],
                "responses": {"200": {"description": "alive", "content": {JSON: {"schema": "Health"}}}},
            }
        },
        "/api/health": {
            "get": {
                "summary": "Readiness as the ECO web app polls it, in the ECO backend's shape",
                "operationId": "apiHealth",
                "tags": ["clients"],
                "responses": {
                    "200": {"description": "ready", "content": {JSON: {"schema": "ApiHealth"}}},
                    "503": {
                        "description": "not ready, and why",
                        "content": {JSON: {"schema": "ApiHealthDown"}},
                    },
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Liveness as the ECO backend answered it: the text `ok`",
                "operationId": "health",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "alive", "content": {"text/plain": {"schema": {"const": "ok"}}}}
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: databases reachable, migrations applied, outbox loops up",
                "operationId": "readyz",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "ready", "content": {JSON: {"schema": "Ready"}}},
                    "503": {
                        "description": "not ready, with the problems",
                        "content": {JSON: {"schema": "Ready"}},
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "operationId": "metrics",
                "tags": ["operations"],
                "responses": {
                    "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/api/admin/outbox/stats": {
            "get": _admin("Pending and dead outbox rows by kind", "outboxStats", "OutboxStats")
        },
        "/api/admin/outbox/dead": {
            "get": _admin(
                "Dead letters, oldest first, a page at a time",
                "outboxDead",
                "DeadLetters",
                parameters=[{"in": "query", "schema": DeadQuerySchema}],
            )
        },
        "/api/admin/outbox/requeue": {
            "post": _admin(
                "Requeue dead letters (by seq, or all)",
                "outboxRequeue",
                "Requeued",
                requestBody={"required": True, "content": {JSON: {"schema": RequeueSchema}}},
            )
        },
        "/api/admin/outbox/purge-dead": {
            "post": _admin(
                "Delete dead letters older than older_than_s",
                "outboxPurgeDead",
                "Purged",
                requestBody={"required": True, "content": {JSON: {"schema": PurgeDeadSchema}}},
            )
        },
        "/api/admin/relay": {
            "get": _admin(
                "This process's relay: loops, last batch, failures by class, delivered per second",
                "relayState",
                "RelayState",
            )
        },
        "/admin": {
            "get": {
                "summary": "The admin page: backlog, relay, dead letters and requeue (asks for the token)",
                "operationId": "adminPage",
                "tags": ["admin"],
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "tags": ["clients"],
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}
                },
            }
        },
        "/": {
            "get": {
                "summary": "The demo page: ask, watch the stream, watch the signals land",
                "operationId": "page",
                "tags": ["clients"],
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    }


RESPONSE_SCHEMAS = (
    out.ErrorSchema,
    out.SignalAcceptedSchema,
    out.AskResultSchema,
    *out.SSE_EVENTS.values(),
    out.HealthSchema,
    out.ApiHealthSchema,
    out.ApiHealthDownSchema,
    out.ReadySchema,
    out.InteractionSignalsSchema,
    out.OutboxStatsSchema,
    out.DeadLettersSchema,
    out.RequeuedSchema,
    out.PurgedSchema,
    out.RelayStateSchema,
)


@lru_cache(maxsize=4)
def _document(limits: Limits) -> dict[str, Any]:
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.1.0",
        plugins=[AliasPlugin()],
        info={"description": DESCRIPTION},
    )
    spec.components.security_scheme(
        "adminToken", {"type": "http", "scheme": "bearer", "description": "ECO_ADMIN_TOKEN"}
    )
    spec.components.schema("Signal", schema=SignalSchema(limits))
    spec.components.schema("Ask", schema=AskSchema(limits))
    spec.components.schema("Feedback", schema=FeedbackSchema(limits))
    spec.components.schema("ModuleUsage", schema=ModuleUsageSchema())
    for schema in RESPONSE_SCHEMAS:
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
    for path, operations in _paths(limits).items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def openapi_document(limits: Limits) -> dict[str, Any]:
    """Built once per set of limits; a copy, so no caller can change the cached one."""
    return copy.deepcopy(_document(limits))
