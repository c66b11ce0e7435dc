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
RATE_LIMITED_ROUTES = frozenset({"ask-eco", "signal"})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(
            exc.status, exc.error, exc.message, details=exc.details, headers=exc.headers
        )
    except ValidationError as exc:
        response = error_response(
            422, "validation_failed", "the request does not match the schema", details=details_of(exc)
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = error_response(exc.status, code_for(exc), exc.reason, headers=headers)
    except (DatabaseUnavailable, *CONNECTION_ERRORS) as exc:
        logger.bind(code="db_unavailable").warning(
            "{} {}: database unavailable: {}", request.method, request.path, exc
        )
        retry_after = request.app[CONFIG].retry_after_s
        response = error_response(
            503,
            "database_unavailable",
            "the database is unavailable; retry later",
            headers={"Retry-After": str(retry_after)},
        )
    except Exception:
        logger.bind(code="internal_error").exception("{} {} failed", request.method, request.path)
        response = error_response(500, "internal_error", "an unexpected error occurred")
    if response.status >= 500 or response.status in (413, 415, 429):
        logger.bind(code=response.status).info("{} {} -> {}", request.method, request.path, response.status)
    return response


def client_of(request: web.Request) -> str:
    return f"{request.remote}|{request.headers.get('X-Eco-Guest-Id', '')}"


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.match_info.route.name in RATE_LIMITED_ROUTES:
        wait_s = request.app[RATE_LIMITER].acquire(client_of(request))
        if wait_s > 0:
            return error_response(
                429,
                "rate_limited",
                "too many requests from this client; slow down",
                headers={"Retry-After": str(math.ceil(wait_s))},
            )
    return await handler(request)
