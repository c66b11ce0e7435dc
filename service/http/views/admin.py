"""Admin endpoints for the outbox: stats, dead letters, requeue, relay state; bearer ECO_ADMIN_TOKEN, off when
unset. The admin page at /admin is public HTML: everything it shows comes from these endpoints."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Any

from aiohttp import hdrs, web

from outbox import admin as outbox_admin
from outbox.activity import RELAY_ACTIVITY
from outbox.metrics import outbox_metrics
from service.admin_documents import dead_letter_document, stats_document
from service.http.admin_schemas import DeadQuerySchema, PurgeDeadSchema, RequeueSchema
from service.http.errors import ApiError
from service.http.payload import read_json
from service.http.views.page import STATIC_DIR
from service.keys import CONFIG, DATABASES, RELAY
from service.store.outbox_names import OUTBOX_NAMES

ADMIN_BODY_BYTES = 64 * 1024
# The relay's counters of rows held back or given up, shown on the admin page by their labels (reasons).
_METRICS = outbox_metrics(OUTBOX_NAMES)
FAILURE_COUNTERS = (
    _METRICS.relay_retried,
    _METRICS.relay_dead,
    _METRICS.relay_outages,
    _METRICS.relay_batch_failures,
    _METRICS.relay_refused,
)
# The page holds a bearer token: it runs only its own scripts, is never framed, and sends no Referer.
ADMIN_PAGE_HEADERS = {
    hdrs.CACHE_CONTROL: "no-cache",
    hdrs.CONTENT_SECURITY_POLICY: (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
        " frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    hdrs.REFERRER_POLICY: "no-referrer",
    hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
}


def require_admin(request: web.Request) -> None:
    token = request.app[CONFIG].admin_token
    if token is None:
        raise ApiError(403, "admin_disabled", "admin endpoints are off: ECO_ADMIN_TOKEN is not set")
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token is required",
            headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="admin"'},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "forbidden", "the bearer token is not valid")


def failure_counts() -> list[dict[str, Any]]:
    """Each labelled series of the relay's failure counters in this process, as the page lists them."""
    counts = []
    for counter in FAILURE_COUNTERS:
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts.append(
                        {"metric": family.name, "labels": sample.labels, "count": int(sample.value)}
                    )
    return counts


def relay_document(request: web.Request) -> dict[str, Any]:
    first_s, counts = RELAY_ACTIVITY.delivered_per_s()
    last = RELAY_ACTIVITY.last_batch
    last_batch = None
    if last is not None:
        last_batch = {**asdict(last), "finished_at": last.finished_at.isoformat()}
    return {
        "running": request.app[RELAY].running,
        "loops": request.app[CONFIG].relay.loops,
        "last_batch": last_batch,
        "failures": failure_counts(),
        "delivered_per_s": {"start_unix_s": first_s, "counts": counts},
    }


async def outbox_stats(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(
        stats_document(await outbox_admin.stats(request.app[DATABASES].outbox, OUTBOX_NAMES))
    )


async def outbox_dead(request: web.Request) -> web.Response:
    require_admin(request)
    query = DeadQuerySchema().load(dict(request.query))
    letters = await outbox_admin.list_dead(request.app[DATABASES].outbox, OUTBOX_NAMES, **query)
    return web.json_response(
        {
            "items": [dead_letter_document(letter) for letter in letters],
            "next_after_seq": letters[-1].seq if len(letters) == query["limit"] else None,
        }
    )


async def outbox_requeue(request: web.Request) -> web.Response:
    require_admin(request)
    body = RequeueSchema().load(await read_json(request, ADMIN_BODY_BYTES))
    requeued = await outbox_admin.requeue(
        request.app[DATABASES].outbox, OUTBOX_NAMES, None if body["all"] else body["seqs"]
    )
    return web.json_response({"requeued": requeued, "count": len(requeued)})


async def outbox_purge_dead(request: web.Request) -> web.Response:
    require_admin(request)
    body = PurgeDeadSchema().load(await read_json(request, ADMIN_BODY_BYTES))
    purged = await outbox_admin.purge_dead(request.app[DATABASES].outbox, OUTBOX_NAMES, body["older_than_s"])
    return web.json_response({"purged": purged})


async def relay_state(request: web.Request) -> web.Response:
    """What this process's relay did lately (the page's chart and relay card); /readyz says if it runs."""
    require_admin(request)
    return web.json_response(relay_document(request))


async def admin_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "admin.html", headers=ADMIN_PAGE_HEADERS)
