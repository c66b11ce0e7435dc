"""The ECO app's local reply id (`eco-<uuid>`): rows that name it as their interaction are accepted and held
under it, delivered once a later request ties it to the interaction, and dead as `unresolved_message` when
nothing does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from outbox.relay import Relay
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import Parent, local_group, signal_event
from tests.conftest import TEST_RELAY
from tests.helpers import fetch, insert_interaction, scalar, wait_for
from tests.test_relay import enqueue

TOKEN = "local-id-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def local_id() -> str:
    return f"eco-{uuid.uuid4()}"


async def landed_under(db: Any, signal_id: str, interaction_id: str) -> None:
    """Wait until the signal is in the target, once, under `interaction_id`."""
    assert await wait_for(
        lambda: fetch(
            db, "select interaction_id::text from analytics.eco_passive_signals where id = %s", (signal_id,)
        )
    ) == [(interaction_id,)]


async def post_view_under(client: TestClient, local: str, *, in_header: bool) -> str:
    """The app's first `view` of a reply whose interaction id it does not know yet."""
    if in_header:
        resp = await client.post(
            "/api/signal",
            json={"signal": "view", "message_id": local},
            headers={"X-Eco-Interaction-Id": local},
        )
    else:
        resp = await client.post("/api/signal", json={"signal": "view", "interaction_id": local})
    assert resp.status == 202
    return (await resp.json())["id"]


async def post_feedback_under(client: TestClient, local: str) -> None:
    resp = await client.post(
        "/api/feedback", json={"interaction_id": local, "vote": "up", "message_id": local}
    )
    assert resp.status == 204


async def tie_with_signal(client: TestClient, local: str, interaction_id: str) -> None:
    resp = await client.post(
        "/api/signal", json={"signal": "copy", "interaction_id": interaction_id, "message_id": local}
    )
    assert resp.status == 202


async def tie_with_feedback(client: TestClient, local: str, interaction_id: str) -> None:
    resp = await client.post(
        "/api/feedback", json={"interaction_id": interaction_id, "vote": "down", "message_id": local}
    )
    assert resp.status == 204


async def post_usage_under(client: TestClient, local: str) -> None:
    resp = await client.post(
        "/api/module-usage", json={"moduleKey": "offline", "position": 1, "interactionId": local}
    )
    assert resp.status == 204


HELD: dict[str, Callable[[TestClient, str], Awaitable[Any]]] = {
    "signal-in-header": lambda client, local: post_view_under(client, local, in_header=True),
    "signal-in-body": lambda client, local: post_view_under(client, local, in_header=False),
    "feedback": post_feedback_under,
    "module-usage": post_usage_under,
}
# name -> (the tie, the table its own row lands in)
TIES = {
    "signal": (tie_with_signal, "analytics.eco_passive_signals"),
    "feedback": (tie_with_feedback, "analytics.eco_feedback"),
}
# Where each held row lands.
LANDS = {
    "signal-in-header": "analytics.eco_passive_signals",
    "signal-in-body": "analytics.eco_passive_signals",
    "feedback": "analytics.eco_feedback",
    "module-usage": "analytics.eco_module_usages",
}


async def rows_of(db: Any, table: str, interaction_id: str) -> int:
    return await scalar(db, f"select count(*) from {table} where interaction_id = %s", (interaction_id,))


@pytest.mark.parametrize("tie_first", [False, True], ids=["held-then-tied", "tied-then-held"])
@pytest.mark.parametrize("tie", TIES.values(), ids=TIES.keys())
@pytest.mark.parametrize("held", HELD.keys())
async def test_a_row_held_under_a_local_id_lands_once_tied(
    client: TestClient, db: Any, held: str, tie: Any, tie_first: bool
) -> None:
    local, interaction_id = local_id(), str(uuid.uuid4())
    table = LANDS[held]
    tie, tie_table = tie
    # The tie's own row lands too: in the same table, it is counted beside the held one.
    expected = 1 + (1 if tie_table == table else 0)
    if tie_first:
        await tie(client, local, interaction_id)
    await HELD[held](client, local)
    if not tie_first:
        # Held: filed under the local id's group, not delivered, whatever the relay does meanwhile.
        group = str(local_group(local))
        assert await scalar(db, "select count(*) from eco_outbox.events where group_key = %s", (group,)) == 1
        await tie(client, local, interaction_id)
    # The interaction arrives last: everything waits for it, then lands once.
    await insert_interaction(db, interaction_id)
    assert await wait_for(lambda: rows_of(db, table, interaction_id), lambda n: n >= expected) == expected
    if held == "feedback":
        assert (
            await wait_for(
                lambda: scalar(
                    db,
                    "select count(*) from analytics.bandit_rewards where response_id = %s",
                    (interaction_id,),
                )
            )
            == 1
        )
    # Marked in the outbox just after its target commit: settled, nothing left pending or dead.
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda count: count == 0,
    )
    assert await rows_of(db, table, interaction_id) == expected


# name -> X-Eco-Interaction-Id: near misses of a local reply id are refused as any bad uuid is.
BAD_HEADERS = {
    "not-a-uuid-after-eco": "eco-123",
    "other-prefix": f"msg-{uuid.uuid4()}",
    "empty-prefix": "eco-",
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
async def test_a_header_that_is_no_local_reply_id_is_a_422(client: TestClient, db: Any, header: str) -> None:
    resp = await client.post("/api/signal", json={"signal": "view"}, headers={"X-Eco-Interaction-Id": header})
    assert resp.status == 422
    assert "X-Eco-Interaction-Id" in (await resp.json())["details"]
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0


async def test_a_local_id_nothing_ties_dies_unresolved_and_can_be_requeued(
    make_client: Callable[..., Awaitable[TestClient]], db: Any
) -> None:
    client = await make_client(admin_token=TOKEN, relay=replace(TEST_RELAY, max_attempts=3))
    local = local_id()
    signal_id = await post_view_under(client, local, in_header=True)
    dead = await wait_for(
        lambda: fetch(db, "select state, last_error from eco_outbox.events where key = %s", (signal_id,)),
        lambda rows: rows and rows[0][0] == "dead",
    )
    assert dead == [("dead", "unresolved_message")]
    listed = await (await client.get("/api/admin/outbox/dead", headers=AUTH)).json()
    assert [item["last_error"] for item in listed["items"]] == ["unresolved_message"]
    # Requeued, it waits again under its local id; tied at last, it lands, once.
    seq = listed["items"][0]["seq"]
    requeued = await client.post("/api/admin/outbox/requeue", headers=AUTH, json={"seqs": [seq]})
    assert (await requeued.json())["requeued"] == [seq]
    interaction_id = str(uuid.uuid4())
    await insert_interaction(db, interaction_id)
    await tie_with_signal(client, local, interaction_id)
    await landed_under(db, signal_id, interaction_id)


async def test_a_local_id_nothing_ties_within_the_max_age_dies_of_it(db: Any) -> None:
    """Nothing tied it within the max age: it dies as unresolved_message, its attempts not spent."""
    local = local_id()
    signal = signal_event(Parent(local_id=local), "view", {})
    await enqueue(db, [signal])
    await fetch(db, "update eco_outbox.events set created_at = now() - interval '2 hours'")
    relay = Relay(
        db, db, ECO_TARGET, replace(TEST_RELAY, max_attempts=1000, max_age_s=3600.0), names=OUTBOX_NAMES
    )

    assert (await relay.run_once()).dead == 1
    assert await fetch(db, "select state, attempts, last_error from eco_outbox.events") == [
        ("dead", 1, "unresolved_message")
    ]


async def test_a_tie_revives_rows_that_died_unresolved(
    make_client: Callable[..., Awaitable[TestClient]], db: Any
) -> None:
    client = await make_client(relay=replace(TEST_RELAY, max_attempts=2))
    local = local_id()
    signal_id = await post_view_under(client, local, in_header=False)
    await wait_for(
        lambda: scalar(db, "select state from eco_outbox.events where key = %s", (signal_id,)),
        lambda state: state == "dead",
    )
    interaction_id = str(uuid.uuid4())
    await insert_interaction(db, interaction_id)
    await tie_with_feedback(client, local, interaction_id)
    await landed_under(db, signal_id, interaction_id)


async def test_a_module_usage_under_the_local_id_and_again_under_the_real_one_lands_once(
    client: TestClient, db: Any
) -> None:
    local, interaction_id = local_id(), str(uuid.uuid4())
    await post_usage_under(client, local)
    await tie_with_signal(client, local, interaction_id)
    await insert_interaction(db, interaction_id)
    await wait_for(lambda: rows_of(db, "analytics.eco_module_usages", interaction_id))
    resp = await client.post(
        "/api/module-usage", json={"moduleKey": "offline", "position": 1, "interactionId": interaction_id}
    )
    assert resp.status == 204
    await wait_for(
        lambda: scalar(db, "select count(*) from eco_outbox.events where state <> 'delivered'"),
        lambda count: count == 0,
    )
    assert await rows_of(db, "analytics.eco_module_usages", interaction_id) == 1


async def test_a_tie_does_not_wait_on_a_row_a_stuck_relay_holds(client: TestClient, db: Any) -> None:
    """The tie's move waits on a row locked by a relay (stuck on its target) only for a bounded time: the
    request is answered, and the relay moves the row when it next holds it."""
    local, interaction_id = local_id(), str(uuid.uuid4())
    signal_id = await post_view_under(client, local, in_header=True)
    await insert_interaction(db, interaction_id)
    async with db.acquire() as conn, conn.cursor() as cur, cur.begin():
        # Locked as a relay's claim locks it (this transaction ends only after the tie is answered).
        await cur.execute("select 1 from eco_outbox.events where key = %s for update", (signal_id,))
        async with asyncio.timeout(10):
            await tie_with_signal(client, local, interaction_id)
        [(group,)] = await fetch(
            db, "select group_key::text from eco_outbox.events where key = %s", (signal_id,)
        )
        assert group == str(local_group(local))
    await landed_under(db, signal_id, interaction_id)
