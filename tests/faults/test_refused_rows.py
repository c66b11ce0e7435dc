"""Rows the target refuses (a CHECK constraint added under the service, a session id too long for its
index) are isolated in the batch that carried them: every other row is delivered in the same pass, the
refused one is charged an attempt with its SQLSTATE and message, dead-lettered at the limit, listed by the
admin API, and delivered by a requeue once the target is fixed. Nothing stalls the queue."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from service.keys import WRITER
from service.target.rows import InteractionRow, interaction_event
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, scalar, wait_for
from tests.loss_checker import LossChecker

TOKEN = "refused-rows-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD_SIGNALS = 300
MAX_ATTEMPTS = 3
# Posted in requests of this many signals, so the refused row shares its batches with good ones.
REQUEST_ROWS = 25


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def build(make_client: Callable[..., Any]) -> TestClient:
    # One loop with large batches: the refused row is claimed together with everything after it.
    relay = replace(TEST_RELAY, max_attempts=MAX_ATTEMPTS, loops=1, batch_size=1000)
    # One client posting everything: no rate limit.
    return await make_client(admin_token=TOKEN, relay=relay, rate_limit_per_s=0.0)


async def ask(client: TestClient, session_id: str | None = None) -> str:
    headers = {"X-Eco-Session-Id": session_id} if session_id else {}
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers=headers)
    assert resp.status == 200, await resp.text()
    await resp.read()
    return resp.headers["X-Eco-Interaction-Id"]


async def post_all(client: TestClient, checker: LossChecker, bodies: list[dict[str, Any]]) -> None:
    for start in range(0, len(bodies), REQUEST_ROWS):
        status = await checker.post(client.session, base_url(client), bodies[start : start + REQUEST_ROWS])
        assert status == 202


async def outbox_event(db: Any, kind: str, key: str) -> tuple[str, int, str | None]:
    rows = await fetch(
        db,
        f"select state, attempts, last_error from {OUTBOX_ROWS} where kind = %s and key = %s",
        (kind, key),
    )
    assert len(rows) == 1, rows
    return rows[0]


async def test_a_refused_signal_is_isolated_dead_lettered_and_requeued(
    make_client: Callable[..., Any], db: Any
) -> None:
    await fetch(
        db,
        "alter table analytics.eco_passive_signals add constraint no_poison"
        " check (meta ->> 'poison' is null) not valid",
    )
    client = await build(make_client)
    refused_before = sample("eco_outbox_refused_rows_total", kind="signal", sqlstate="23514")
    dead_before = sample("eco_outbox_dead_lettered_total", kind="signal", reason="refused_23514")
    checker = LossChecker()
    parent = await ask(client)
    poison = checker.body(parent, poison=True)
    checker.expect_refused.add(poison["signal_id"])
    # The refused signal first, at the head of the claim order, the good ones behind it.
    await post_all(client, checker, [poison, *(checker.body(parent, i=i) for i in range(GOOD_SIGNALS))])
    await checker.wait_settled(db)
    report = await checker.verify(db, db)
    assert (report.delivered, report.refused, report.dead) == (GOOD_SIGNALS, 1, 0)

    state, attempts, last_error = await outbox_event(db, "signal", poison["signal_id"])
    assert (state, attempts) == ("dead", MAX_ATTEMPTS)
    assert last_error is not None and last_error.startswith("23514: ") and "no_poison" in last_error
    assert sample("eco_outbox_refused_rows_total", kind="signal", sqlstate="23514") == refused_before + 3
    assert sample("eco_outbox_dead_lettered_total", kind="signal", reason="refused_23514") == dead_before + 1
    # Interactions asked after the refusal still flow.
    later = await ask(client)
    await wait_for(
        lambda: scalar(db, "select count(*) from analytics.eco_interactions where id = %s", (later,)),
        lambda count: count == 1,
    )

    dead = await (await client.get("/api/admin/outbox/dead", headers=AUTH)).json()
    [item] = dead["items"]
    assert item["key"] == poison["signal_id"] and item["last_error"] == last_error

    await fetch(db, "alter table analytics.eco_passive_signals drop constraint no_poison")
    resp = await client.post("/api/admin/outbox/requeue", headers=AUTH, json={"seqs": [item["seq"]]})
    assert resp.status == 200
    await wait_for(lambda: outbox_event(db, "signal", poison["signal_id"]), lambda row: row[0] == "delivered")
    checker.expect_refused.clear()
    report = await checker.verify(db, db)
    assert (report.delivered, report.refused, report.dead) == (GOOD_SIGNALS + 1, 0, 0)


async def enqueue_interaction(client: TestClient, session_id: str) -> str:
    """An interaction put in the outbox as the ask handler would, bypassing the header checks."""
    row = InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), session_id=session_id)
    await client.server.app[WRITER].enqueue([interaction_event(row)])
    return str(row.id)


async def refused_interaction(
    make_client: Callable[..., Any],
    db: Any,
    session_id: str,
    sqlstate: str,
    create: Callable[[TestClient, str], Awaitable[str]] = ask,
) -> tuple[TestClient, str]:
    """Create one interaction with `session_id` (which the target refuses) between good asks, with signals
    for each; returns its id once everything has settled and passed the loss check."""
    client = await build(make_client)
    checker = LossChecker()
    good_before = await ask(client)
    refused = await create(client, session_id)
    good_after = await ask(client)
    bodies = [checker.body(parent, i=i) for i in range(60) for parent in (good_before, refused, good_after)]
    await post_all(client, checker, bodies)
    await checker.wait_settled(db)
    report = await checker.verify(db, db)
    assert (report.delivered, report.dead) == (120, 60)

    state, attempts, last_error = await outbox_event(db, "interaction", refused)
    assert (state, attempts) == ("dead", MAX_ATTEMPTS)
    assert last_error is not None and last_error.startswith(f"{sqlstate}: "), last_error
    # Its signals waited without being charged while it was pending, then died of its absence.
    reasons = await fetch(
        db,
        "select distinct last_error from eco_outbox.events where kind = 'signal' and group_key = %s",
        (refused,),
    )
    assert reasons == [("parent_missing",)]
    delivered = await scalar(
        db,
        "select count(*) from analytics.eco_interactions where id = any(%s::uuid[])",
        ([good_before, good_after],),
    )
    assert delivered == 2
    return client, refused


async def test_a_refused_interaction_dies_with_its_signals_and_the_rest_flows(
    make_client: Callable[..., Any], db: Any
) -> None:
    await fetch(
        db,
        "alter table analytics.eco_interactions add constraint no_poison"
        " check (session_id is null or session_id not like 'poison%%') not valid",
    )
    client, refused = await refused_interaction(make_client, db, f"poison-{uuid.uuid4()}", "23514")
    dead = await (await client.get("/api/admin/outbox/dead?limit=500", headers=AUTH)).json()
    assert any(item["key"] == refused and item["kind"] == "interaction" for item in dead["items"])


async def test_a_6_kb_session_header_is_refused_at_intake_and_as_a_row_not_an_outage(
    make_client: Callable[..., Any], db: Any
) -> None:
    """A 6 KB session header is a 422 at the door. One that reached the outbox anyway (written before the
    header cap, or by another writer) makes the target raise 54000 (index row too large) as an
    OperationalError: classed by SQLSTATE, it is a refused row, not an outage."""
    # Random hex: a repeated character would be compressed below the index's row size limit.
    session_id = secrets.token_hex(3 * 1024)
    client = await build(make_client)
    resp = await client.post(
        "/api/ask-eco", json={"message": "Olá"}, headers={"X-Eco-Session-Id": session_id}
    )
    assert resp.status == 422
    assert "X-Eco-Session-Id" in (await resp.json())["details"]
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0

    outages_before = sample("eco_outbox_relay_outages_total")
    await refused_interaction(make_client, db, session_id, "54000", create=enqueue_interaction)
    assert sample("eco_outbox_relay_outages_total") == outages_before
