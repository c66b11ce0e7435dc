"""Parent lag for every child kind: the app posts its signals (by uuid and by its local reply id), its vote
and its module usages the moment the stream ends, while the interaction cannot reach the target yet. All are
acknowledged at once and, when the interaction lands, each lands exactly once."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import fetch, scalar, wait_for
from tests.loss_checker import FEEDBACK, MODULE_USAGE, LossChecker
from tests.test_race import interactions_locked

REPLIES = 5


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def test_every_child_kind_posted_before_its_interaction_lands_once(client: TestClient, db: Any) -> None:
    checker = LossChecker()
    url = base_url(client)
    local_signals: dict[str, str] = {}
    async with interactions_locked(db, True):
        for n in range(REPLIES):
            resp = await client.post("/api/ask-eco", json={"message": f"olá {n}", "stream": False})
            interaction_id = (await resp.json())["interaction_id"]
            local = f"eco-{uuid.uuid4()}"
            # The first view carries the reply's local id; the later copy ties it to the interaction.
            view = await client.post(
                "/api/signal", json={"signal": "view", "meta": {}}, headers={"X-Eco-Interaction-Id": local}
            )
            assert view.status == 202
            local_signals[(await view.json())["id"]] = interaction_id
            copy = checker.body(interaction_id, "copy")
            copy["message_id"] = local
            assert await checker.post(client.session, url, [copy]) == 202
            assert (
                await checker.post(client.session, url, [checker.body(interaction_id, "time_on_message")])
                == 202
            )
            for kind in (MODULE_USAGE, FEEDBACK):
                assert await checker.post_child(client.session, url, kind, interaction_id) == 204
        # Nothing could land: the interactions are held back, and so is every child.
        assert await scalar(db, "select count(*) from analytics.eco_interactions") == 0
        assert await scalar(db, "select count(*) from analytics.eco_feedback") == 0
    await checker.wait_settled(db)
    report = await checker.verify(db, db)
    assert (report.acknowledged, report.delivered, report.dead) == (4 * REPLIES, 4 * REPLIES, 0)
    landed = await wait_for(
        lambda: fetch(
            db,
            "select id::text, interaction_id::text from analytics.eco_passive_signals"
            " where id = any(%s::uuid[])",
            (list(local_signals),),
        ),
        lambda rows: len(rows) == REPLIES,
    )
    assert dict(landed) == local_signals
    assert await scalar(db, "select count(*) from analytics.bandit_rewards") == REPLIES
