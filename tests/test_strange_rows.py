"""A strange row never stalls the queue: an exception that is no database's is a bug, not an outage: logged
with its traceback once per batch, its rows isolated and charged, the rest delivered, and /readyz says so.
(A row of a kind this release has no deliverer for is left to a release that has one, and dies alone as
unknown_kind once none took it within the max age: tests/outbox/test_engine.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiopg
import pytest
from aiopg import Cursor
from loguru import logger
from prometheus_client import REGISTRY

from outbox.errors import Failure
from outbox.relay import Relay
from outbox.target import DeliveryResult, Target
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET
from service.target.rows import InteractionRow, Kind, interaction_event, signal_event
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, probe, wait_for
from tests.test_relay import enqueue


async def states(db: aiopg.Pool) -> dict[str, tuple[str, int, str | None]]:
    rows = await fetch(db, f"select key::text, state, attempts, last_error from {OUTBOX_ROWS}")
    return {key: (state, attempts, error) for key, state, attempts, error in rows}


@pytest.fixture
def error_logs() -> Iterator[list[Any]]:
    """The relay's ERROR records that carry a traceback."""
    records: list[Any] = []
    sink = logger.add(
        lambda message: records.append(message.record),
        level="ERROR",
        filter=lambda record: record["exception"] is not None,
    )
    yield records
    logger.remove(sink)


def strange_signals(poison: str) -> Target:
    """ECO's target, but its signal deliverer raises a KeyError on any batch that holds `poison`."""
    deliver_signals = ECO_TARGET.deliverers[Kind.SIGNAL]

    async def deliver(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
        if any(poison in payload for payload in payloads):
            raise KeyError(poison)
        return await deliver_signals(cur, keys, payloads)

    return replace(ECO_TARGET, deliverers={**ECO_TARGET.deliverers, Kind.SIGNAL: deliver})


async def test_a_row_the_code_cannot_handle_is_isolated_not_an_outage(
    db: aiopg.Pool, error_logs: list[Any]
) -> None:
    iid = uuid.uuid4()
    good = [signal_event(iid, f"s{i}", {}) for i in range(6)]
    bad = signal_event(iid, "poison", {})
    await enqueue(db, [interaction_event(InteractionRow(id=iid, created_at=datetime.now(UTC))), *good, bad])
    outages = REGISTRY.get_sample_value("eco_outbox_relay_outages_total") or 0.0

    outcome = await Relay(db, db, strange_signals('"poison"'), TEST_RELAY, names=OUTBOX_NAMES).run_once()

    assert (outcome.claimed, outcome.delivered, outcome.retried) == (8, 7, 1)
    state, attempts, error = (await states(db))[str(bad.key)]
    assert (state, attempts) == ("pending", 1)
    assert error is not None and error.startswith("internal: KeyError")
    assert (REGISTRY.get_sample_value("eco_outbox_relay_outages_total") or 0.0) == outages
    assert len(error_logs) == 1, "one traceback for the batch, not one per statement of its isolation"
    assert error_logs[0]["exception"].type is KeyError


async def test_a_batch_that_fails_on_a_bug_is_reported_by_the_loop(
    db: aiopg.Pool, error_logs: list[Any]
) -> None:
    """A deliverer that answers nonsense fails the whole batch in the relay's own code: the loop records an
    internal failure (what /readyz reports), logs its traceback, and is no outage."""

    async def broken(cur: Cursor, keys: Sequence[str], payloads: Sequence[str]) -> DeliveryResult:
        return None  # type: ignore[return-value]

    target = replace(ECO_TARGET, deliverers={**ECO_TARGET.deliverers, Kind.INTERACTION: broken})
    await enqueue(db, [interaction_event(InteractionRow(id=uuid.uuid4(), created_at=datetime.now(UTC)))])
    relay = Relay(db, db, target, replace(TEST_RELAY, loops=1, outage_pause_max_s=0.1), names=OUTBOX_NAMES)
    relay.start()
    try:
        [health] = relay.loops
        await wait_for(probe(lambda: health.consecutive_failures), lambda failures: failures >= 3)
        assert health.last_failure_class == Failure.INTERNAL
        assert health.last_failure is not None and health.last_failure.startswith("AttributeError")
        [problem] = relay.problems()
        assert "internal" in problem
        assert len(error_logs) >= 3 and all(r["exception"].type is AttributeError for r in error_logs)
    finally:
        await relay.stop()
