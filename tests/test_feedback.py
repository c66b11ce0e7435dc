"""POST /api/feedback and POST /api/module-usage, as the production app and the ECO backend's client send
them: every shape is answered 204 once committed, and lands once its interaction is in the target."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import fetch, insert_interaction, scalar, wait_for

LOCAL_ID = "eco-7f6d0b1e-2a3c-4d5e-8f90-1a2b3c4d5e6f"
APP_HEADERS = {"X-Client-Id": "webapp", "X-Eco-Guest-Id": str(uuid.uuid4()), "X-Eco-Session-Id": "sess-1"}

# name -> (body without interaction_id, expected vote, expected reason, expected arm, expected pillar)
FEEDBACK_SHAPES: dict[str, tuple[dict[str, Any], str, list[str] | None, str, str]] = {
    "app-like": (
        {"vote": "up", "reason": None, "source": "api", "session_id": "s", "user_id": None},
        "up",
        None,
        "baseline",
        "default",
    ),
    "app-dislike-reason-string": (
        {
            "vote": "down",
            "reason": "too_long",
            "pillar": "geral",
            "arm": "offline",
            "message_id": LOCAL_ID,
            "meta": {"ui": "chat_actions"},
        },
        "down",
        ["too_long"],
        "offline",
        "geral",
    ),
    "backend-like": (
        {"vote": "like", "reason": ["a", "b"], "response_id": "resp-1"},
        "up",
        ["a", "b"],
        "baseline",
        "default",
    ),
    "backend-dislike-case": ({"vote": " Dislike ", "reason": []}, "down", None, "baseline", "default"),
}


async def _ask(client: TestClient) -> dict[str, Any]:
    resp = await client.post("/api/ask-eco", json={"message": "olá", "stream": False})
    assert resp.status == 200
    return await resp.json()


@pytest.mark.parametrize("shape", FEEDBACK_SHAPES.values(), ids=FEEDBACK_SHAPES.keys())
async def test_feedback_shapes_answer_204_and_land_once(client: TestClient, db: Any, shape: Any) -> None:
    body, vote, reason, arm, pillar = shape
    interaction_id = str(uuid.uuid4())
    resp = await client.post(
        "/api/feedback", json={**body, "interaction_id": interaction_id}, headers=APP_HEADERS
    )
    assert resp.status == 204
    # Committed before the 204: the vote is in the outbox, waiting for its interaction (beside the link of
    # the local reply id, for the shape that gives one).
    pending = await fetch(
        db,
        "select state from eco_outbox.events where group_key = %s and kind = 'feedback'",
        (interaction_id,),
    )
    assert pending == [("pending",)]
    await insert_interaction(db, interaction_id)
    rows = await wait_for(
        lambda: fetch(
            db,
            "select vote::text, reason, arm, pillar, meta from analytics.eco_feedback"
            " where interaction_id = %s",
            (interaction_id,),
        )
    )
    assert [row[:4] for row in rows] == [(vote, reason, arm, pillar)]
    assert rows[0][4]["client_id_header"] == "webapp"
    rewards = await wait_for(
        lambda: fetch(
            db,
            "select arm, recompensa from analytics.bandit_rewards where response_id = %s",
            (interaction_id,),
        )
    )
    assert [(a, float(r)) for a, r in rewards] == [(arm, 1.0 if vote == "up" else -1.0)]


# name -> (body, status, the field the error names)
BAD_FEEDBACK: dict[str, tuple[Any, int, str]] = {
    "no-vote": ({"interaction_id": str(uuid.uuid4())}, 422, "vote"),
    "bad-vote": ({"interaction_id": str(uuid.uuid4()), "vote": "meh"}, 422, "vote"),
    "no-interaction": ({"vote": "up"}, 422, "interaction_id"),
    "bad-interaction": ({"vote": "up", "interaction_id": "not-an-id"}, 422, "interaction_id"),
    "reason-number": ({"vote": "down", "interaction_id": str(uuid.uuid4()), "reason": 3}, 422, "reason"),
    "not-an-object": ([1, 2], 422, "_schema"),
}


@pytest.mark.parametrize("case", BAD_FEEDBACK.values(), ids=BAD_FEEDBACK.keys())
async def test_bad_feedback_is_a_4xx_the_app_can_read(client: TestClient, db: Any, case: Any) -> None:
    body, status, field = case
    resp = await client.post("/api/feedback", json=body)
    assert resp.status == status
    answer = await resp.json()
    assert answer["error"] == "validation_failed"
    assert field in answer["details"]
    assert answer["message"].startswith(field)
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0


# name -> body (the interaction id is added)
MODULE_USAGE_SHAPES: dict[str, dict[str, Any]] = {
    "app-camel-case": {"moduleKey": "offline", "position": 1, "tokens": 12, "sessionId": "s"},
    "backend-snake-case": {"module_key": "offline", "position": 1, "tokens": 12, "session_id": "s"},
}


@pytest.mark.parametrize("body", MODULE_USAGE_SHAPES.values(), ids=MODULE_USAGE_SHAPES.keys())
async def test_module_usage_shapes_land_once_per_module_and_position(
    client: TestClient, db: Any, body: dict[str, Any]
) -> None:
    interaction_id = str(uuid.uuid4())
    key = "interactionId" if "moduleKey" in body else "interaction_id"
    for _ in range(2):
        resp = await client.post("/api/module-usage", json={**body, key: interaction_id}, headers=APP_HEADERS)
        assert resp.status == 204
    await insert_interaction(db, interaction_id)
    rows = await wait_for(
        lambda: fetch(
            db,
            "select module_key, position, tokens from analytics.eco_module_usages where interaction_id = %s",
            (interaction_id,),
        )
    )
    assert rows == [("offline", 1, 12)]


async def test_done_names_the_modules_and_the_app_posts_them(client: TestClient, db: Any) -> None:
    done = await _ask(client)
    assert done["meta"]["module_combo"] == ["offline"]
    assert done["payload"]["module_combo"] == ["offline"]
    interaction_id = done["interaction_id"]
    for position, module in enumerate(done["meta"]["module_combo"], start=1):
        resp = await client.post(
            "/api/module-usage",
            json={"moduleKey": module, "position": position, "interactionId": interaction_id},
        )
        assert resp.status == 204
    # The arm is read when the vote is delivered: the usage is in place first, as when a user clicks.
    await wait_for(
        lambda: fetch(
            db, "select 1 from analytics.eco_module_usages where interaction_id = %s", (interaction_id,)
        )
    )
    resp = await client.post("/api/feedback", json={"interaction_id": interaction_id, "vote": "down"})
    assert resp.status == 204
    assert await wait_for(
        lambda: fetch(
            db, "select module_combo from analytics.eco_interactions where id = %s", (interaction_id,)
        )
    ) == [(["offline"],)]
    assert await wait_for(
        lambda: fetch(
            db, "select arm from analytics.eco_feedback where interaction_id = %s", (interaction_id,)
        )
    ) == [("offline",)]
