"""The four middlewares, in the order the app stacks them: metrics (every answer timed, errors included),
errors, headers, rate limit.

Every error leaves as JSON: 4xx for the client's input, 503 with Retry-After for a database that is down,
and a bare 500 with no detail for anything unforeseen (logged with its traceback, never sent)."""

from __future__ import annotations

import math
import time
from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from loguru import logger
from marshmallow import ValidationError

from outbox.errors import CONNECTION_ERRORS, DatabaseUnavailable
from service.config import IPNetwork
from service.http.errors import ApiError, code_for, details_of, error_response
from service.http.headers import HEADER_INTERACTION_ID, check_headers, header_uuid
from service.http.metrics import HTTP_SECONDS, route_of
from service.keys import CONFIG, RATE_LIMITER

IPAddress = IPv4Address | IPv6Address

# Route names (see routes.py) that count against the per-client rate limit.
RATE_LIMITED_ROUTES = frozenset(
    {
        "ask-eco",
        "ask-eco-get",
        "signal",
        "signal-unprefixed",
        "feedback",
        "module-usage",
        "interaction-signals",
    }
)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_SECONDS.labels(request.method, route_of(request), str(status)).observe(
            time.perf_counter() - started
        )


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
            headers={hdrs.RETRY_AFTER: str(request.app[CONFIG].retry_after_s)},
        )
    except Exception:
        logger.bind(code="internal_error").exception("{} {} failed", request.method, request.path)
        error = ApiError(500, "internal_error", "an unexpected error occurred")
    logger.bind(code=error.error, interaction_id=_interaction_id(request)).info(
        "{} {} -> {}: {}", request.method, request.path, error.status, error.message
    )
    response = error_response(
        error.status, error.error, error.message, details=error.details, headers=error.headers
    )
    if error.close:
        response.force_close()
    return response


@web.middleware
async def header_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    check_headers(request)
    return await handler(request)


def _interaction_id(request: web.Request) -> str | None:
    """The header's interaction id for the log, only when it is one: the header may be what was refused."""
    try:
        return header_uuid(request, HEADER_INTERACTION_ID)
    except ValueError:
        return None


def _address(text: str) -> IPAddress | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: IPAddress | None, proxies: tuple[IPNetwork, ...]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_of(request: web.Request, proxies: tuple[IPNetwork, ...]) -> str:
    """The client's address, the rate limit's key. Behind trusted proxies it is the right-most address of
    X-Forwarded-For that is not a proxy: each proxy appends the peer it saw, so what lies left of that was
    written by the client and proves nothing. Never a header value the client picks (a guest id): a client
    could mint itself a new bucket per request."""
    remote = request.remote or ""
    if not _trusted(_address(remote), proxies):
        return remote
    hops = [hop for value in request.headers.getall(hdrs.X_FORWARDED_FOR, ()) for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        if not _trusted(address, proxies):
            return str(address)
    return remote


def charge(request: web.Request, cost: float = 1.0) -> None:
    """Take `cost` tokens from the client's bucket, or refuse the request with 429 and Retry-After."""
    wait_s = request.app[RATE_LIMITER].acquire(client_of(request, request.app[CONFIG].trusted_proxies), cost)
    if wait_s > 0:
        raise ApiError(
            429,
            "rate_limited",
            "too many requests from this client; slow down",
            headers={hdrs.RETRY_AFTER: str(math.ceil(wait_s))},
        )


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One token per request, before its body is read; the signal view charges a batch's other signals."""
    if request.match_info.route.name in RATE_LIMITED_ROUTES:
        charge(request)
    return await handler(request)
