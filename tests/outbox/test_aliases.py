"""The engine's aliases on its own target (tests/outbox/toy.py): a child filed under an alias of its group is
held until a row of the alias kind names the group, then delivered as any child of that group; in either
order, and whether the mover is the caller (`regroup`) or the relay (`regroup_claimed`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace

import aiopg
import pytest
from aiopg import Cursor

from outbox.aliases import regroup
from outbox.enqueue import OutboxWriter
from outbox.events import OutboxEvent
from outbox.relay import Relay
from outbox.target import DeliveryResult, Target
from tests.conftest import TEST_RELAY
from tests.helpers import fetch
from tests.outbox.toy import CHILD, PARENT, TOY_NAMES, deliver_children, deliver_parents, parent_event

ALIAS = "alias"
UNRESOLVED = "unresolved_alias"
# Long backoff: a row moves or is released only when the engine says so, never by its timer in a test.
SLOW = replace(TEST_RELAY, backoff=replace(TEST_RELAY.backoff, base_ms=60_000, cap_ms=60_000))


async def deliver_aliased_children(
    cur: Cursor, keys: Sequence[str], payloads: Sequence[str]
) -> DeliveryResult:
    """The toy's children, and those with no parent yet (filed under an alias) held as unresolved."""
    result = await deliver_children(cur, keys, payloads)
    for key, payload in zip(keys, payloads, strict=True):
        if key in result.held and json.loads(payload)["parent_id"] is None:
            result.held[key] = UNRESOLVED
    return result


async def deliver_nothing(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
    return DeliveryResult(delivered=set(keys))


TARGET = Target(
    deliverers={PARENT: deliver_parents, ALIAS: deliver_nothing, CHILD: deliver_aliased_children},
    waits_on={CHILD: frozenset({PARENT})},
    alias_kind=ALIAS,
    unresolved_reason=UNRESOLVED,
)


def aliased_child(alias: uuid.UUID, note: str) -> OutboxEvent:
    key = uuid.uuid4()
    return OutboxEvent(CHILD, key, alias, {"id": str(key), "parent_id": None, "note": note})


def alias_row(alias: uuid.UUID, parent: uuid.UUID) -> OutboxEvent:
    return OutboxEvent(ALIAS, alias, parent, {"parent_id": str(parent)})


async def child_state(db: aiopg.Pool) -> list[tuple[object, ...]]:
    return await fetch(
        db, "SELECT state, last_error, group_key::text FROM eco_outbox.events WHERE kind = %s", (CHILD,)
    )


async def test_held_under_an_alias_then_moved_by_the_caller(db: aiopg.Pool, writer: OutboxWriter) -> None:
    alias, parent = uuid.uuid4(), uuid.uuid4()
    relay = Relay(db, db, TARGET, SLOW, names=TOY_NAMES)
    await writer.enqueue([aliased_child(alias, "early")])
    held = await relay.run_once()
    assert (held.delivered, held.retried) == (0, 1)
    assert await child_state(db) == [("pending", UNRESOLVED, str(alias))]

    await writer.enqueue([alias_row(alias, parent), parent_event(parent, "p")])
    assert len(await regroup(db, TOY_NAMES, ALIAS, [str(alias)])) == 1
    # Moved: a child of the parent's group now, due at once, its payload naming the parent.
    assert await child_state(db) == [("pending", None, str(parent))]
    await relay.run_once()
    await relay.run_once()
    assert await fetch(db, "SELECT parent_id, note FROM toy.children") == [(parent, "early")]


async def test_named_first_then_moved_by_the_relay_that_holds_it(
    db: aiopg.Pool, writer: OutboxWriter
) -> None:
    alias, parent = uuid.uuid4(), uuid.uuid4()
    relay = Relay(db, db, TARGET, SLOW, names=TOY_NAMES)
    await writer.enqueue([alias_row(alias, parent), parent_event(parent, "p")])
    await relay.run_once()
    # Enqueued after the alias was named, and no caller moves it: the relay does, when its deliverer holds it.
    await writer.enqueue([aliased_child(alias, "late")])
    await relay.run_once()
    assert await child_state(db) == [("pending", None, str(parent))]
    await relay.run_once()
    assert await fetch(db, "SELECT parent_id, note FROM toy.children") == [(parent, "late")]


def test_the_alias_kind_must_be_delivered() -> None:
    with pytest.raises(ValueError, match="alias_kind"):
        Target(deliverers={PARENT: deliver_parents}, alias_kind=ALIAS)
