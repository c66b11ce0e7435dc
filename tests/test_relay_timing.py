"""Relays interleaved at pinned points, with the production settings: a child held because its parent was in
another relay's open claim is due again as soon as that parent is delivered, never after its backoff; a
creation that waited on a concurrent completion of the same interaction is delivered, not a conflict; a wake
during one loop's batch sends a waiting loop at once; under a stream of rows the loops together start one
partial batch per coalescing interval, not one each."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiopg
import pytest

from outbox.enqueue import OutboxWriter, encode_payload
from outbox.relay import PAUSE_CLAIMED, PAUSE_COMMITTED, PAUSE_MARKED, Relay, RelaySettings
from outbox.sqlutil import transaction
from outbox.target import DeliveryResult
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET, deliver_interactions
from service.target.queries import TARGET_QUERIES
from service.target.rows import InteractionRow, interaction_event, signal_event
from tests.helpers import OUTBOX_ROWS, fetch, scalar, wait_for
from tests.relay_pauses import Pauses

# Production settings, one row a batch: each relay claims exactly the row the test means it to.
PRODUCTION_ONE_ROW = RelaySettings(batch_size=1)


@pytest.fixture
async def relay_pools(database_url: str) -> AsyncIterator[tuple[aiopg.Pool, aiopg.Pool]]:
    """One pool per relay, as two processes would have."""
    pools = [await aiopg.create_pool(database_url, minsize=0, maxsize=4, enable_hstore=False) for _ in "ab"]
    yield pools[0], pools[1]
    for pool in pools:
        pool.close()
        await pool.wait_closed()


async def enqueue_in_order(db: aiopg.Pool, *events: object) -> None:
    writer = OutboxWriter(db, OUTBOX_NAMES)
    await writer.start()
    try:
        for event in events:
            await writer.enqueue([event])  # type: ignore[list-item]
    finally:
        await writer.close()


async def child_state(db: aiopg.Pool, key: str) -> tuple[str, int, str | None, bool]:
    [row] = await fetch(
        db,
        f"select state, attempts, last_error, next_attempt_at <= now() from {OUTBOX_ROWS} where key = %s",
        (key,),
    )
    return row


async def test_a_child_held_during_its_parents_claim_is_released_by_its_own_relay(
    db: aiopg.Pool, relay_pools: tuple[aiopg.Pool, aiopg.Pool]
) -> None:
    """A claims the parent and pauses before writing it; B claims the child, finds no parent in the target
    and the parent pending in the outbox, marks the child `parent_pending` and pauses before committing. A
    then delivers the parent and releases its group: that UPDATE skips the child, whose committed version B
    still holds as due. B commits. The child must be due now, not in the backoff cap's 30 s."""
    parent_id = uuid.uuid4()
    parent = interaction_event(InteractionRow(id=parent_id, created_at=datetime.now(UTC)))
    child = signal_event(parent_id, "view", {})
    await enqueue_in_order(db, parent, child)
    a_pauses, b_pauses = Pauses(PAUSE_CLAIMED), Pauses(PAUSE_MARKED)
    a = Relay(
        relay_pools[0], relay_pools[0], ECO_TARGET, PRODUCTION_ONE_ROW, pause=a_pauses, names=OUTBOX_NAMES
    )
    b = Relay(
        relay_pools[1], relay_pools[1], ECO_TARGET, PRODUCTION_ONE_ROW, pause=b_pauses, names=OUTBOX_NAMES
    )

    a_batch = asyncio.create_task(a.run_once())
    await a_pauses.reached(PAUSE_CLAIMED)
    b_batch = asyncio.create_task(b.run_once())
    await b_pauses.reached(PAUSE_MARKED)
    a_pauses.resume(PAUSE_CLAIMED)
    a_outcome = await a_batch
    assert (a_outcome.claimed, a_outcome.delivered) == (1, 1)
    # B's hold is not committed yet: A's release could not see it.
    assert await child_state(db, str(child.key)) == ("pending", 0, None, True)
    b_pauses.resume(PAUSE_MARKED)
    b_outcome = await b_batch
    assert (b_outcome.claimed, b_outcome.retried) == (1, 1)

    assert await child_state(db, str(child.key)) == ("pending", 0, "parent_pending", True)
    again = await a.run_once()
    assert (again.claimed, again.delivered) == (1, 1)
    assert (await child_state(db, str(child.key)))[0] == "delivered"


async def test_a_creation_that_waited_on_a_concurrent_completion_is_delivered(db: aiopg.Pool) -> None:
    """Another relay's completion upsert has inserted the interaction and not committed; the creation's
    INSERT waits on that row, then skips it when the completion commits. The row is there: delivered."""
    row = InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC), message_id="m-1")
    key, payload = str(row.id), encode_payload(row.payload())
    async with db.acquire() as completing, completing.cursor() as completion:
        async with db.acquire() as creating, creating.cursor() as creation:
            await creation.execute("select pg_backend_pid()")
            [(pid,)] = await creation.fetchall()

            async def create() -> DeliveryResult:
                async with transaction(creation):
                    return await deliver_interactions(creation, [key], [payload])

            async with transaction(completion):
                await completion.execute(TARGET_QUERIES["upsert_completions"].sql, {"rows": f"[{payload}]"})
                created = asyncio.create_task(create())
                await wait_for(
                    lambda: scalar(db, "select wait_event_type from pg_stat_activity where pid = %s", (pid,)),
                    lambda wait: wait == "Lock",
                )
            # The completion has committed while the creation waited on its row.
            result = await created
    assert (result.delivered, result.held) == ({key}, {})


async def test_a_wake_during_a_batch_sends_the_waiting_loop_at_once(db: aiopg.Pool) -> None:
    """Rows that come while one loop is in a batch go to a loop that is waiting, not to the busy one after
    its batch: the first row's batch is held after its commit, and the second row is delivered meanwhile.
    The poll is an hour long, so that only a wake can send a loop to claim (the rest is production's)."""
    parent_id = uuid.uuid4()
    await fetch(db, "insert into analytics.eco_interactions (id) values (%s)", (str(parent_id),))
    pauses = Pauses(PAUSE_COMMITTED)
    relay = Relay(db, db, ECO_TARGET, RelaySettings(poll_s=3600.0), pause=pauses, names=OUTBOX_NAMES)
    relay.start()
    try:
        await wait_for(
            lambda: asyncio.sleep(0, [loop.last_success_monotonic_s for loop in relay.loops]),
            lambda successes: None not in successes,
        )
        first, second = signal_event(parent_id, "first", {}), signal_event(parent_id, "second", {})
        await enqueue_in_order(db, first)
        relay.wake()
        await pauses.reached(PAUSE_COMMITTED)
        await enqueue_in_order(db, second)
        relay.wake()
        await wait_for(
            lambda: scalar(db, f"select state from {OUTBOX_ROWS} where key = %s", (str(second.key),)),
            lambda state: state == "delivered",
        )
        pauses.resume(PAUSE_COMMITTED)
    finally:
        pauses.resume(PAUSE_COMMITTED)
        await relay.stop()
    assert await scalar(db, "select count(*) from analytics.eco_passive_signals") == 2


STREAM_ROWS = 150


async def test_under_a_stream_the_loops_together_start_one_partial_batch_per_coalescing_interval(
    db: aiopg.Pool,
) -> None:
    """Rows one at a time, each with a wake, faster than the coalescing interval: the relay's loops start no
    more batches between them than one per interval (and one each to begin with), where a loop of its own
    each would start one per interval apiece. The poll is an hour long, so that only wakes send the loops."""
    parent_id = uuid.uuid4()
    await fetch(db, "insert into analytics.eco_interactions (id) values (%s)", (str(parent_id),))
    settings = RelaySettings(poll_s=3600.0)
    batches = 0

    async def count(point: str) -> None:
        nonlocal batches
        batches += point == PAUSE_CLAIMED

    relay = Relay(db, db, ECO_TARGET, settings, pause=count, names=OUTBOX_NAMES)
    writer = OutboxWriter(db, OUTBOX_NAMES)
    relay.start()
    await writer.start()
    try:
        started = time.monotonic()
        for n in range(STREAM_ROWS):
            await writer.enqueue([signal_event(parent_id, f"s-{n}", {})])
            relay.wake()
        await wait_for(
            lambda: scalar(db, "select count(*) from analytics.eco_passive_signals"),
            lambda count: count == STREAM_ROWS,
        )
        elapsed_s = time.monotonic() - started
    finally:
        await writer.close()
        await relay.stop()
    assert 1 < batches <= elapsed_s / (settings.coalesce_ms / 1000) + settings.loops, (batches, elapsed_s)
