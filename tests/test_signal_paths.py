"""Passive signals as the ECO production app sends them: to `/signal`, which serves what `/api/signal` serves
(the same view, rate limit and answers), as one object or `{"events": [...]}`, a batch like a JSON array,
with `message_id` kept in the stored meta."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.config import Limits
from tests.helpers import fetch, insert_interaction, wait_for

IID = str(uuid.uuid4())
LOCAL_ID = f"eco-{uuid.uuid4()}"
VIEW = {"signal": "view", "interaction_id": IID}
COPY = {"signal": "copy", "interaction_id": IID, "message_id": LOCAL_ID, "session_id": "s-1"}
TOO_MANY = Limits().signal_batch_items + 1


def shape(status: int, body: Any) -> tuple[int, Any]:
    """An answer without the ids it mints: the status, and per signal its status or the error and details."""
    if isinstance(body, list):
        return status, [item["status"] for item in body]
    if "id" in body:
        return status, body["status"]
    return status, (body["error"], body.get("details"))


# (name, body, the answer's shape)
BODIES: list[tuple[str, Any, tuple[int, Any]]] = [
    ("one", VIEW, (202, "queued")),
    ("array batch", [VIEW, COPY], (202, ["queued", "queued"])),
    ("events batch", {"events": [VIEW, COPY]}, (202, ["queued", "queued"])),
    ("events batch of one", {"events": [COPY]}, (202, ["queued"])),
    ("events beside unknown fields", {"events": [VIEW], "sentAt": 1}, (202, ["queued"])),
    (
        "empty events",
        {"events": []},
        (422, ("validation_failed", {"_schema": ["a batch must hold at least one signal"]})),
    ),
    (
        "events not a list",
        {"events": VIEW},
        (422, ("validation_failed", {"events": ["must be a list of signals"]})),
    ),
    (
        "too many events",
        {"events": [VIEW] * TOO_MANY},
        (422, ("validation_failed", {"_schema": [f"a batch holds at most {TOO_MANY - 1}"]})),
    ),
    (
        "an invalid event",
        {"events": [VIEW, {"signal": "view"}]},
        (422, ("validation_failed", {"1": {"interaction_id": ["Missing data for required field."]}})),
    ),
]


@pytest.mark.parametrize(("name", "body", "expected"), BODIES, ids=[name for name, _, _ in BODIES])
async def test_signal_and_api_signal_answer_alike(
    client: TestClient, name: str, body: Any, expected: tuple[int, Any]
) -> None:
    answers = []
    for path in ("/signal", "/api/signal"):
        resp = await client.post(path, json=body)
        answers.append(shape(resp.status, await resp.json()))
    assert answers == [expected, expected]


def test_signal_is_the_same_view_as_api_signal(client: TestClient) -> None:
    handlers = {
        route.resource.canonical: route.handler
        for route in client.app.router.routes()
        if route.method == "POST" and route.resource is not None
    }
    assert handlers["/signal"] is handlers["/api/signal"]


async def test_signal_is_rate_limited_as_api_signal(
    make_client: Callable[..., Awaitable[TestClient]],
) -> None:
    client = await make_client(rate_limit_per_s=0.01, rate_limit_burst=2.0)
    statuses = [(await client.post(path, json=VIEW)).status for path in ("/signal", "/api/signal", "/signal")]
    assert statuses == [202, 202, 429]


INTAKE = [
    ("/api/feedback", {"interaction_id": IID, "vote": "up"}, 204),
    ("/api/module-usage", {"moduleKey": "offline", "position": 1, "interactionId": IID}, 204),
]


@pytest.mark.parametrize(("path", "body", "status"), INTAKE, ids=[path for path, _, _ in INTAKE])
async def test_every_route_the_app_writes_to_is_rate_limited(
    make_client: Callable[..., Awaitable[TestClient]], path: str, body: dict[str, Any], status: int
) -> None:
    """Anonymous writes, each an outbox row: bounded per client as signals are."""
    client = await make_client(rate_limit_per_s=0.01, rate_limit_burst=2.0)
    statuses = [(await client.post(path, json=body)).status for _ in range(3)]
    assert statuses == [status, status, 429]


async def test_an_events_batch_lands_with_its_message_ids(client: TestClient, db: Any) -> None:
    """As the app flushes a reply's signals: grouped under the interaction's header, message_id in meta."""
    await insert_interaction(db, IID)
    time_on = {"signal": "time_on_message", "interaction_id": IID, "value": 4200, "message_id": LOCAL_ID}
    resp = await client.post(
        "/signal",
        json={"events": [VIEW, COPY, time_on]},
        headers={"X-Eco-Interaction-Id": IID, "X-Eco-Guest-Id": "g-1", "X-Client-Id": "webapp"},
    )
    assert resp.status == 202
    ids = [answer["id"] for answer in await resp.json()]
    rows = await wait_for(
        lambda: fetch(
            db,
            "select signal, meta from analytics.eco_passive_signals"
            " where id = any(%s::uuid[]) order by signal",
            (ids,),
        ),
        lambda rows: len(rows) == 3,
    )
    assert [(signal, meta.get("message_id")) for signal, meta in rows] == [
        ("copy", LOCAL_ID),
        ("time_on_message", LOCAL_ID),
        ("view", None),
    ]
    copy_meta = rows[0][1]
    assert copy_meta["session_id"] == "s-1" and copy_meta["guest_id_header"] == "g-1"
    assert rows[1][1]["value"] == 4200
