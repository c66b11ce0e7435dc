"""Operating the service: health, readiness, metrics, CORS, rate limit, retention, logs, SSE keep-alive."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from ipaddress import ip_network

from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from outbox.retention import PurgeSettings, purge_delivered
from service.http.ratelimit import RateLimiter
from service.keys import DATABASES, RELAY
from service.runtime.logs import setup_logging
from service.store.outbox_names import OUTBOX_NAMES
from tests.conftest import TEST_RELAY
from tests.helpers import fetch, iter_sse, scalar, wait_for


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def scrape(client) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return await resp.text()


async def test_healthz_and_readyz(client) -> None:
    assert (await client.get("/healthz")).status == 200
    await wait_for(lambda: client.get("/readyz"), lambda r: r.status == 200)
    answer = await (await client.get("/readyz")).json()
    assert answer["status"] == "ready" and "problems" not in answer
    assert set(answer["loops"]) == {
        "outbox-relay-0",
        "outbox-relay-1",
        "outbox-writer-0",
        "outbox-writer-1",
        "outbox-listener",
        "outbox-purger",
    }
    assert all(loop["running"] and loop["restarts"] == 0 for loop in answer["loops"].values())


async def test_readyz_reports_a_stopped_relay_and_pending_migrations(client, db) -> None:
    await fetch(db, "DELETE FROM public.eco_schema_migrations WHERE version LIKE '002_%%' RETURNING version")
    await client.app[RELAY].stop()
    resp = await client.get("/readyz")
    assert resp.status == 503
    problems = (await resp.json())["problems"]
    assert "relay not running" in problems
    assert any("pending migrations: 002_outbox_events" in p for p in problems)


async def test_metrics_move_as_signals_flow(client, db) -> None:
    before = await scrape(client)
    interaction_id = str(uuid.uuid4())
    for name in ("view", "copy"):
        resp = await client.post("/api/signal", json={"interaction_id": interaction_id, "name": name})
        assert resp.status == 202

    def retried(text: str) -> float:
        return sample(text, "eco_outbox_retried_total", kind="signal", reason="parent_missing")

    # Wait on the scrape itself: the relay counts a retry only after its mark has committed.
    waiting = await wait_for(
        lambda: scrape(client),
        lambda text: (
            retried(text) >= 2 + retried(before)
            and sample(text, "eco_outbox_rows", kind="signal", state="pending") == 2
        ),
    )
    assert sample(waiting, "eco_outbox_oldest_pending_age_seconds", kind="signal") > 0
    assert sample(
        waiting, "eco_http_request_seconds_count", method="POST", route="/api/signal", status="202"
    ) >= 2 + sample(
        before, "eco_http_request_seconds_count", method="POST", route="/api/signal", status="202"
    )

    await fetch(db, "INSERT INTO analytics.eco_interactions (id) VALUES (%s) RETURNING id", (interaction_id,))

    def delivered(text: str) -> float:
        return sample(text, "eco_outbox_delivered_total", kind="signal")

    # The target row commits before the relay marks the outbox row and counts it: wait for both.
    after = await wait_for(
        lambda: scrape(client),
        lambda text: (
            sample(text, "eco_outbox_rows", kind="signal", state="pending") == 0
            and delivered(text) >= 2 + delivered(before)
        ),
    )
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM analytics.eco_passive_signals WHERE interaction_id = %s",
            (interaction_id,),
        )
        == 2
    )
    assert sample(after, "eco_outbox_relay_batch_rows_count") > sample(
        before, "eco_outbox_relay_batch_rows_count"
    )
    assert sample(after, "eco_outbox_database_up") == 1


async def test_open_streams_gauge_counts_a_live_stream(make_client) -> None:
    client = await make_client(offline_chunk_delay_ms=200.0)
    baseline = sample(await scrape(client), "eco_sse_open_streams")
    resp = await client.post("/api/ask-eco", json={"message": "oi"}, headers={"Accept": "text/event-stream"})
    events = iter_sse(resp)
    assert (await anext(events)).event == "prompt_ready"
    assert sample(await scrape(client), "eco_sse_open_streams") == baseline + 1
    async for event in events:
        if event.event == "done":
            break
    await wait_for(lambda: scrape(client), lambda text: sample(text, "eco_sse_open_streams") == baseline)


async def test_cors_allows_only_configured_origins(make_client) -> None:
    client = await make_client(cors_origins=("https://eco.example",))
    preflight = {
        "Origin": "https://eco.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-eco-interaction-id",
    }
    ok = await client.options("/api/signal", headers=preflight)
    assert ok.status == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "https://eco.example"
    assert "X-ECO-INTERACTION-ID" in ok.headers["Access-Control-Allow-Headers"].upper()

    denied = await client.options("/api/signal", headers={**preflight, "Origin": "https://evil.example"})
    assert denied.status == 403
    assert "Access-Control-Allow-Origin" not in denied.headers

    resp = await client.post(
        "/api/ask-eco", json={"message": "oi"}, headers={"Origin": "https://eco.example"}
    )
    assert resp.headers["Access-Control-Allow-Origin"] == "https://eco.example"
    assert "X-Eco-Interaction-Id" in resp.headers["Access-Control-Expose-Headers"]


async def test_rate_limit_answers_429_with_retry_after(make_client) -> None:
    client = await make_client(rate_limit_per_s=1.0, rate_limit_burst=3.0)
    body = {"interaction_id": str(uuid.uuid4()), "name": "view"}
    statuses = [
        (await client.post("/api/signal", json=body, headers={"X-Eco-Guest-Id": "g1"})).status
        for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    limited = await client.post("/api/signal", json=body, headers={"X-Eco-Guest-Id": "g1"})
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["error"] == "rate_limited"
    # The key is the client's address: a guest id the client picks does not buy it a new bucket.
    other_guest = await client.post("/api/signal", json=body, headers={"X-Eco-Guest-Id": "g2"})
    assert other_guest.status == 429
    assert (await client.get("/healthz")).status == 200


async def test_the_rate_limit_counts_signals_not_requests(make_client, db) -> None:
    """A batch of n signals costs n tokens: a client at the limit cannot multiply it by the batch size."""
    client = await make_client(rate_limit_per_s=0.001, rate_limit_burst=10.0)
    parent = str(uuid.uuid4())
    batch = [{"interaction_id": parent, "name": "view"} for _ in range(8)]
    assert (await client.post("/api/signal", json=batch)).status == 202
    refused = await client.post("/api/signal", json=batch)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    # Two tokens were left, and the refused batch spent one as a request: one single signal passes.
    single = {"interaction_id": parent, "name": "view"}
    assert [(await client.post("/api/signal", json=single)).status for _ in range(2)] == [202, 429]
    assert await scalar(db, "select count(*) from eco_outbox.events where group_key = %s", (parent,)) == 9


def test_a_cost_above_the_burst_is_charged_as_the_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 5.0, clock=lambda: now[0])
    assert limiter.acquire("c", 100) == 0.0
    assert limiter.acquire("c") == 1.0
    now[0] = 5.0
    assert limiter.acquire("c", 100) == 0.0


async def signal_statuses(client, forwarded_for: list[str]) -> list[int]:
    body = {"interaction_id": str(uuid.uuid4()), "name": "view"}
    return [
        (await client.post("/api/signal", json=body, headers={"X-Forwarded-For": hops})).status
        for hops in forwarded_for
    ]


async def test_rate_limit_keys_on_x_forwarded_for_only_from_trusted_proxies(make_client) -> None:
    trusted = await make_client(
        rate_limit_per_s=0.001, rate_limit_burst=2.0, trusted_proxies=(ip_network("127.0.0.0/8"),)
    )
    # Each proxy appends the peer it saw: the right-most untrusted hop is the client, what a client wrote
    # to the left of it is not believed.
    assert await signal_statuses(
        trusted, ["198.51.100.1", "10.9.9.9, 198.51.100.1", "198.51.100.2, 198.51.100.1, 127.0.0.5"]
    ) == [202, 202, 429]
    assert await signal_statuses(trusted, ["198.51.100.2", "not-an-ip, 198.51.100.3"]) == [202, 202]

    untrusted = await make_client(rate_limit_per_s=0.001, rate_limit_burst=2.0)
    assert await signal_statuses(untrusted, ["198.51.100.1", "198.51.100.2", "198.51.100.3"]) == [
        202,
        202,
        429,
    ]


async def test_retention_purges_old_delivered_rows_in_batches_and_keeps_the_rest(client, db) -> None:
    await fetch(
        db,
        """
        INSERT INTO eco_outbox.events (kind, key, group_key, payload, state, delivered_at, dead_at)
        SELECT 'signal', gen_random_uuid(), gen_random_uuid(), '{}'::jsonb, state, at, dead_at
        FROM (VALUES ('delivered', now() - interval '2 days', NULL::timestamptz),
                     ('delivered', now() - interval '1 minute', NULL),
                     ('dead', NULL, now() - interval '1 day'),
                     ('pending', NULL, NULL)) AS v(state, at, dead_at),
             generate_series(1, 5)
        RETURNING seq
        """,
    )
    await client.app[RELAY].stop()
    await fetch(db, "UPDATE eco_outbox.events SET next_attempt_at = now() + interval '1 hour' RETURNING seq")
    purged = await purge_delivered(client.app[DATABASES].outbox, OUTBOX_NAMES, retention_s=3600, batch=2)
    assert purged == 5
    counts = dict(await fetch(db, "SELECT state, count(*) FROM eco_outbox.events GROUP BY state"))
    assert counts == {"delivered": 5, "dead": 5, "pending": 5}


async def test_the_purger_removes_dead_rows_after_their_own_retention(make_client, db) -> None:
    """Dead rows past ECO_OUTBOX_DEAD_RETENTION_S go, in batches; younger dead rows and the rest stay."""
    await fetch(
        db,
        """
        INSERT INTO eco_outbox.events (kind, key, group_key, payload, state, delivered_at, dead_at)
        SELECT 'signal', gen_random_uuid(), gen_random_uuid(), '{}'::jsonb, state, at, dead_at
        FROM (VALUES ('dead', NULL::timestamptz, now() - interval '3 days'),
                     ('dead', NULL, now() - interval '1 minute'),
                     ('delivered', now() - interval '3 days', NULL)) AS v(state, at, dead_at),
             generate_series(1, 5)
        RETURNING seq
        """,
    )
    purge = PurgeSettings(dead_retention_s=2 * 24 * 3600.0, retention_s=30 * 24 * 3600.0, batch=2)
    await make_client(relay=replace(TEST_RELAY, loops=0), purge=purge)
    await wait_for(
        lambda: fetch(db, "SELECT state, count(*) FROM eco_outbox.events GROUP BY state ORDER BY state"),
        lambda counts: counts == [("dead", 5), ("delivered", 5)],
    )
    assert await scalar(db, "SELECT max(dead_at) < now() - interval '2 days' FROM eco_outbox.events") is False


async def test_sse_sends_keepalive_comments(make_client) -> None:
    client = await make_client(sse_ping_s=0.05, offline_chunk_delay_ms=150.0)
    resp = await client.post("/api/ask-eco", json={"message": "oi"}, headers={"Accept": "text/event-stream"})
    lines = []
    async for raw in resp.content:
        lines.append(raw.decode().rstrip("\n"))
        if lines[-1].startswith("event: done"):
            break
    assert ": ping" in lines


def test_json_logs_carry_context_and_route_stdlib_loggers(capsys) -> None:
    setup_logging(json_lines=True)
    try:
        logger.bind(interaction_id="i-1", signal="s-1", attempt=3, delay_ms=40, code="parent_missing").info(
            "retry"
        )
        logging.getLogger("aiohttp.server").error("from aiohttp")
    finally:
        setup_logging(json_lines=False)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    retry = next(line for line in lines if line["message"] == "retry")
    assert {k: retry[k] for k in ("interaction_id", "signal", "attempt", "delay_ms", "code")} == {
        "interaction_id": "i-1",
        "signal": "s-1",
        "attempt": 3,
        "delay_ms": 40,
        "code": "parent_missing",
    }
    assert retry["level"] == "INFO"
    stdlib = next(line for line in lines if line["message"] == "from aiohttp")
    assert stdlib["level"] == "ERROR" and stdlib["logger"] == "aiohttp.server"


class TargetGone(LookupError):
    """An exception class of this test's own, so its name cannot come from anywhere else."""


def test_json_logs_name_the_exceptions_real_type(capsys) -> None:
    setup_logging(json_lines=True)
    try:
        try:
            raise TargetGone("no such table")
        except TargetGone:
            logger.exception("delivery failed")
    finally:
        setup_logging(json_lines=False)
    [line] = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line["exception"] == "TargetGone"
    assert "no such table" in line["traceback"]


HOSTILE = "{x}{time}<red>{{</red>"


def test_log_context_with_braces_and_tags_arrives_intact(capsys) -> None:
    """Context values are client data: braces and angle brackets are neither fields nor colour tags."""
    for json_lines in (False, True):
        setup_logging(json_lines=json_lines)
        try:
            logger.bind(interaction_id=HOSTILE, code="<b>").info("said {}", HOSTILE)
            logging.getLogger("aiohttp.access").info("GET /%s", HOSTILE)
        finally:
            setup_logging(json_lines=False)
        err = capsys.readouterr().err
        assert "Logging error" not in err
        if json_lines:
            lines = [json.loads(line) for line in err.splitlines() if line.strip()]
            said = next(line for line in lines if line["message"].startswith("said "))
            assert said["message"] == f"said {HOSTILE}"
            assert said["interaction_id"] == HOSTILE and said["code"] == "<b>"
            assert any(line["message"] == f"GET /{HOSTILE}" for line in lines)
        else:
            said = next(line for line in err.splitlines() if "said " in line)
            assert said.endswith(f"said {HOSTILE} interaction_id={HOSTILE} code=<b>")
            assert f"GET /{HOSTILE}" in err
