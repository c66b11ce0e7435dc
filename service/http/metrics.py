"""HTTP and stream metrics, and the outbox gauges refreshed at each scrape."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Gauge, Histogram

from outbox.admin import KindStats
from outbox.tables import DEAD, PENDING
from service.target.delivery import ECO_TARGET

HTTP_SECONDS = Histogram(
    "eco_http_request_seconds",
    "HTTP request latency until the handler returned (for SSE: until the stream ended).",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# multiprocess_mode says how service processes combine under ECO_PROCESSES > 1: streams add up over the live
# workers; the outbox gauges are one database's state, read at each scrape: the latest reading wins.
OPEN_STREAMS = Gauge("eco_sse_open_streams", "SSE streams open right now.", multiprocess_mode="livesum")
OUTBOX_ROWS = Gauge(
    "eco_outbox_rows",
    "Outbox rows waiting (pending) or dead-lettered (dead).",
    ["kind", "state"],
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_PENDING_S = Gauge(
    "eco_outbox_oldest_pending_age_seconds",
    "Age of the oldest pending outbox row.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
OUTBOX_UP = Gauge(
    "eco_outbox_database_up",
    "1 when the last scrape could read the outbox, else 0.",
    multiprocess_mode="mostrecent",
)


# The answers the intake's 5xx alert and panels count: present at 0 from the first scrape.
ZERO_STATUSES = ("500", "503")


def zero_http_series(router: web.UrlDispatcher, route_names: frozenset[str]) -> None:
    """The latency series of the named routes, one per method and 5xx status, at 0 before any request."""
    for route in router.routes():
        if route.name in route_names and route.resource is not None:
            for status in ZERO_STATUSES:
                HTTP_SECONDS.labels(route.method, route.resource.canonical, status)


def route_of(request: web.Request) -> str:
    """The route's template, so that ids in paths do not explode the label set."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def record_outbox_stats(rows: list[KindStats] | None) -> None:
    """Set the outbox gauges from a stats query; None when the outbox could not be read."""
    OUTBOX_UP.set(0 if rows is None else 1)
    if rows is None:
        return
    for kind in ECO_TARGET.order:
        for state in (PENDING, DEAD):
            OUTBOX_ROWS.labels(kind, state).set(0)
        OUTBOX_OLDEST_PENDING_S.labels(kind).set(0)
    for row in rows:
        OUTBOX_ROWS.labels(row.kind, row.state).set(row.rows)
        if row.state == PENDING:
            OUTBOX_OLDEST_PENDING_S.labels(row.kind).set(row.oldest_age_s)
