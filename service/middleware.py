"""Every error leaves as JSON: 4xx for the client's input, 503 with Retry-After for a database that is down,
and a bare 500 with no detail for anything unforeseen (logged with its traceback, never sent)."""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.typedefs import Handler
from loguru import logger
from marshmallow import ValidationError

from outbox.errors import CONNECTION_ERRORS, DatabaseUnavailable
from service.errors import ApiError, code_for, details_of, error_response
from service.keys import CONFIG, RATE_LIMITER

# Route names (see routes.py) that count against the per-client rate limit.
RATE_LIMITED_ROUTES = frozenset({"ask-eco", "signal", "interaction-signals"})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        error = exc
    except ValidationError as exc:
        error = ApiError(
            422, "validation_failed", "the request does not match the schema", details=details_of(exc)
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        error = ApiError(exc.status, code_for(exc), exc.reason, headers=headers)
    except (DatabaseUnavailable, *CONNECTION_ERRORS) as exc:
        logger.bind(code="db_unavailable").warning("database unavailable: {}", exc)
        error = ApiError(
            503,
            "database_unavailable",
            "the database is unavailable; retry later",
            headers={"Retry-After": str(request.app[CONFIG].retry_after_s)},
        )
    except Exception:
        logger.bind(code="internal_error").exception("{} {} failed", request.method, request.path)
        error = ApiError(500, "internal_error", "an unexpected error occurred")
    logger.bind(code=error.error, interaction_id=request.headers.get("X-Eco-Interaction-Id")).info(
        "{} {} -> {}: {}", request.method, request.path, error.status, error.message
    )
    return error_response(
        error.status, error.error, error.message, details=error.details, headers=error.headers
    )


def client_of(request: web.Request) -> str:
    return f"{request.remote}|{request.headers.get('X-Eco-Guest-Id', '')}"


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.route.name in RATE_LIMITED_ROUTES:
        wait_s = request.app[RATE_LIMITER].acquire(client_of(request))
        if wait_s > 0:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests from this client; slow down",
                headers={"Retry-After": str(math.ceil(wait_s))},
            )
    return await handler(request)
