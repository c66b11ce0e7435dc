"""The OpenAPI 3.1 document, generated with apispec from the app's routes and the marshmallow schemas.

Paths and methods come from the router (service/http/routes.py): each route is described under its name in
OPERATIONS, and a route without a description is an error, not a gap. Bodies come from the same schemas the
handlers load (service/chat/schemas.py, service/http/admin_schemas.py) and dump (service/http/api_schemas.py),
sized by the configured limits, each alias listed from the schemas' one table (ALIASES); header names from
service/http/headers.py; the version from the package metadata. tests/test_openapi.py holds live answers
to the document.
"""

from __future__ import annotations

import configparser
import copy
import importlib.metadata
import re
from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

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
from service.http.headers import (
    HEADER_CLIENT_MESSAGE_ID,
    HEADER_GUEST_ID,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_INTERACTION_ID,
    HEADER_SESSION_ID,
    HEADER_STREAM_ID,
    HEADER_USER_ID,
)

DISTRIBUTION = "eco-outbox"
SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"
DESCRIPTION = (
    "The ECO chat stream (`POST /api/ask-eco`, SSE or JSON) and passive-signal intake (`POST /api/signal`, "
    "also `/signal`), written to a transactional outbox and delivered to `analytics.*` by a relay."
)

JSON = "application/json"
SSE = "text/event-stream"
UUID_STRING = {"type": "string", "format": "uuid"}

IDENTITY_HEADERS = {
    HEADER_GUEST_ID: "the guest; one is made up when absent",
    HEADER_SESSION_ID: "the session; one is made up when absent",
}


@cache
def package_version() -> str:
    """The installed distribution's version, or setup.cfg's when the tree runs from a checkout."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        setup = configparser.ConfigParser()
        setup.read(SETUP_CFG, encoding="utf-8")
        return setup["metadata"]["version"]


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


def _identity_headers() -> list[dict[str, Any]]:
    return [_header(name, text) for name, text in IDENTITY_HEADERS.items()]


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
        HEADER_INTERACTION_ID: (
            "the interaction, durable in the outbox before the first byte",
            UUID_STRING,
            True,
        ),
        HEADER_GUEST_ID: ("the guest (the request's, or a new one)", {"type": "string"}, True),
        HEADER_SESSION_ID: ("the session (the request's, or a new one)", {"type": "string"}, True),
        HEADER_STREAM_ID: ("this stream", UUID_STRING, True),
        HEADER_CLIENT_MESSAGE_ID: ("echoed when given", {"type": "string"}, False),
    }
    return {
        name: {"description": text, "schema": schema, "required": required}
        for name, (text, schema, required) in described.items()
    }


def _ref(schema: type) -> str:
    return f"#/components/schemas/{_component(schema)}"


def _component(schema: type) -> str:
    return schema.__name__.removesuffix("Schema")


def _ask_operation(limits: Limits) -> dict[str, Any]:
    events = ", ".join(out.SSE_EVENTS)
    return {
        "summary": "Ask ECO: the reply as Server-Sent Events, or as one JSON object",
        "operationId": "askEco",
        "tags": ["chat"],
        "parameters": [
            *_identity_headers(),
            _header(
                HEADER_CLIENT_MESSAGE_ID,
                "idempotency of the ask; wins over the body's client message id (and its aliases)",
            ),
            _header(HEADER_USER_ID, "the user when the body names none; not a uuid is dropped"),
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


def _ask_get_operation(limits: Limits) -> dict[str, Any]:
    """GET, for a browser's EventSource (which cannot POST): the ask in the query, always streamed."""
    post = _ask_operation(limits)
    stream = post["responses"]["200"]
    ask = aliases_of(AskSchema)
    return {
        "summary": (
            "Ask ECO from a query, for EventSource: always a stream. HEAD, and OPTIONS without an Origin, "
            "answer 204 and start nothing."
        ),
        "operationId": "askEcoGet",
        "tags": ["chat"],
        "parameters": [
            *_identity_headers(),
            *(_query(name, "the prompt") for name in ask["text"]),
            *(_query(name, "the history, as JSON (as the body's)") for name in ask["messages"]),
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
        "items": {"$ref": _ref(SignalSchema)},
        "minItems": 1,
        "maxItems": limits.signal_batch_items,
    }
    one_or_batch = {
        "oneOf": [
            {"$ref": _ref(SignalSchema)},
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
            {"$ref": _ref(out.SignalAcceptedSchema)},
            {"type": "array", "items": {"$ref": _ref(out.SignalAcceptedSchema)}},
        ]
    }
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["signals"],
        "parameters": [
            *_identity_headers(),
            _header(HEADER_INTERACTION_ID, "wins over the body's interaction_id", UUID_STRING),
            _header(HEADER_IDEMPOTENCY_KEY, "the signal_id of a single signal", UUID_STRING),
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


def _child_operation(summary: str, operation_id: str, schema: type[Schema]) -> dict[str, Any]:
    """POST /api/feedback, POST /api/module-usage: children of an interaction, as signals are."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["signals"],
        "parameters": _identity_headers(),
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref(schema)}}},
        "responses": {
            "204": {
                "description": "committed to the outbox; delivered once the interaction is in the target"
            },
            **_client_errors(400, 413, 415, 422),
            **RATE_LIMITED,
            **UNAVAILABLE,
        },
    }


def _admin(summary: str, operation_id: str, response: type[Schema], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["admin"],
        "security": [{"adminToken": []}],
        **extra,
        "responses": {
            "200": {"description": "OK", "content": {JSON: {"schema": _component(response)}}},
            **_client_errors(401, 403, *((400, 408, 413, 415, 422) if "requestBody" in extra else (422,))),
            **UNAVAILABLE,
        },
    }


def _plain(
    summary: str, operation_id: str, tag: str, responses: dict[str, tuple[str, str, Any]]
) -> dict[str, Any]:
    """An operation without input: status -> (description, media type, schema)."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": [tag],
        "responses": {
            status: {"description": text, "content": {media: {"schema": schema}}}
            for status, (text, media, schema) in responses.items()
        },
    }


HTML = ("HTML", "text/html", {"type": "string"})

# The operation of each route, by the route's name (service/http/routes.py names every one).
Operation = Callable[[Limits], dict[str, Any]]
OPERATIONS: dict[str, Operation] = {
    "ask-eco": _ask_operation,
    "ask-eco-get": _ask_get_operation,
    "signal": lambda limits: _signal_operation(
        limits,
        "postSignal",
        "Take passive signals: 202 once committed to the outbox (the interaction need not exist yet)",
    ),
    "signal-unprefixed": lambda limits: _signal_operation(
        limits,
        "postSignalUnprefixed",
        "/api/signal under the path the ECO production app posts its passive signals to",
    ),
    "feedback": lambda limits: _child_operation(
        "Take a like or dislike: 204 once committed (the interaction need not exist yet)",
        "postFeedback",
        FeedbackSchema,
    ),
    "module-usage": lambda limits: _child_operation(
        "Take a module a reply used: 204 once committed; stored once per (module, position)",
        "postModuleUsage",
        ModuleUsageSchema,
    ),
    "interaction-signals": lambda limits: {
        "summary": "Delivery state of an interaction's signals (pending, delivered, dead; attempts)",
        "operationId": "interactionSignals",
        "tags": ["signals"],
        "responses": {
            "200": {"description": "OK", "content": {JSON: {"schema": "InteractionSignals"}}},
            **_client_errors(404, 422),
            **RATE_LIMITED,
            **UNAVAILABLE,
        },
    },
    "healthz": lambda limits: _plain(
        "Liveness: the process answers", "healthz", "operations", {"200": ("alive", JSON, "Health")}
    ),
    "api-health": lambda limits: _plain(
        "Readiness as the ECO web app polls it, in the ECO backend's shape",
        "apiHealth",
        "clients",
        {"200": ("ready", JSON, "ApiHealth"), "503": ("not ready, and why", JSON, "ApiHealthDown")},
    ),
    "health": lambda limits: _plain(
        "Liveness as the ECO backend answered it: the text `ok`",
        "health",
        "operations",
        {"200": ("alive", "text/plain", {"const": "ok"})},
    ),
    "readyz": lambda limits: _plain(
        "Readiness: databases reachable, migrations applied, outbox loops up",
        "readyz",
        "operations",
        {"200": ("ready", JSON, "Ready"), "503": ("not ready, with the problems", JSON, "Ready")},
    ),
    "metrics": lambda limits: _plain(
        "Prometheus metrics (text exposition format)",
        "metrics",
        "operations",
        {"200": ("OK", "text/plain", {"type": "string"})},
    ),
    "outbox-stats": lambda limits: _admin(
        "Pending and dead outbox rows by kind", "outboxStats", out.OutboxStatsSchema
    ),
    "outbox-dead": lambda limits: _admin(
        "Dead letters, oldest first, a page at a time",
        "outboxDead",
        out.DeadLettersSchema,
        parameters=[{"in": "query", "schema": DeadQuerySchema}],
    ),
    "outbox-requeue": lambda limits: _admin(
        "Requeue dead letters (by seq, or all)",
        "outboxRequeue",
        out.RequeuedSchema,
        requestBody={"required": True, "content": {JSON: {"schema": RequeueSchema}}},
    ),
    "outbox-purge-dead": lambda limits: _admin(
        "Delete dead letters older than older_than_s",
        "outboxPurgeDead",
        out.PurgedSchema,
        requestBody={"required": True, "content": {JSON: {"schema": PurgeDeadSchema}}},
    ),
    "relay-state": lambda limits: _admin(
        "This process's relay: loops, last batch, failures by class, delivered per second",
        "relayState",
        out.RelayStateSchema,
    ),
    "admin-page": lambda limits: _plain(
        "The admin page: backlog, relay, dead letters and requeue (asks for the token)",
        "adminPage",
        "admin",
        {"200": HTML},
    ),
    "openapi": lambda limits: _plain(
        "This document", "openapi", "clients", {"200": ("OpenAPI 3.1", JSON, {"type": "object"})}
    ),
    "page": lambda limits: _plain(
        "The demo page: ask, watch the stream, watch the signals land", "page", "clients", {"200": HTML}
    ),
}

REQUEST_SCHEMAS: tuple[Callable[[Limits], Schema], ...] = (
    SignalSchema,
    AskSchema,
    FeedbackSchema,
    lambda limits: ModuleUsageSchema(),
)
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
# A route's path parameter, by name, when it is not a plain string.
PATH_PARAMETERS = {"interaction_id": UUID_STRING}

# (path, method, route name) of each documented route.
RouteKey = tuple[str, str, str | None]


def documented_routes(routes: Iterable[web.AbstractRoute]) -> tuple[RouteKey, ...]:
    """The routes the document describes: every one but HEAD, OPTIONS (CORS preflights) and static files."""
    return tuple(
        (route.resource.canonical, route.method.lower(), route.resource.name)
        for route in routes
        if route.method not in ("HEAD", "OPTIONS", "*")
        and route.resource is not None
        and not isinstance(route.resource, web.StaticResource)
    )


def _operation(path: str, method: str, name: str | None, limits: Limits) -> dict[str, Any]:
    if name not in OPERATIONS:
        raise LookupError(f"{method.upper()} {path}: name the route and describe it in openapi.OPERATIONS")
    operation = OPERATIONS[name](limits)
    parameters = [
        {
            "name": param,
            "in": "path",
            "required": True,
            "schema": PATH_PARAMETERS.get(param, {"type": "string"}),
        }
        for param in re.findall(r"\{(\w+)\}", path)
    ]
    if parameters:
        operation["parameters"] = [*parameters, *operation.get("parameters", [])]
    return operation


@lru_cache(maxsize=4)
def _document(routes: tuple[RouteKey, ...], limits: Limits) -> dict[str, Any]:
    spec = APISpec(
        title=DISTRIBUTION,
        version=package_version(),
        openapi_version="3.1.0",
        plugins=[AliasPlugin()],
        info={"description": DESCRIPTION},
    )
    spec.components.security_scheme(
        "adminToken", {"type": "http", "scheme": "bearer", "description": "ECO_ADMIN_TOKEN"}
    )
    for make in REQUEST_SCHEMAS:
        schema = make(limits)
        spec.components.schema(_component(type(schema)), schema=schema)
    for response in RESPONSE_SCHEMAS:
        spec.components.schema(_component(response), schema=response)
    paths: dict[str, dict[str, Any]] = {}
    for path, method, name in routes:
        paths.setdefault(path, {})[method] = _operation(path, method, name, limits)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def openapi_document(router: web.UrlDispatcher, limits: Limits) -> dict[str, Any]:
    """The document of the app's routes, built once per set of routes and limits; a copy, so no caller can
    change the cached one."""
    return copy.deepcopy(_document(documented_routes(router.routes()), limits))
