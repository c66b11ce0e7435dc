"""The relay: claims due outbox rows, writes them to the target, marks them delivered, retried or dead.

Claims hold row locks (FOR UPDATE SKIP LOCKED) in an outbox transaction that stays open while the target is
written, so relays in any number of processes never work on the same row at once; a relay that dies mid-batch
drops its locks and another delivers the rows again, idempotently.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiopg
from aiopg import Cursor
from loguru import logger
from sqlalchemy import Float, Text, bindparam, cast, func, select

from outbox import activity, delivery, metrics
from outbox.background import cancel_and_wait
from outbox.backoff import Backoff
from outbox.errors import CONNECTION_ERRORS
from outbox.events import DELIVERY_ORDER, Kind
from outbox.sqlutil import compile_statement, transaction
from outbox.tables import DEAD, DELIVERED, PENDING, events


@dataclass(frozen=True)
class RelaySettings:
    # Rows claimed per batch: a backlog drains ~10% faster at 1000 than at 500 (per-statement costs).
    batch_size: int = 1000
    poll_s: float = 1.0
    max_attempts: int = 20
    max_age_s: float = 3600.0
    # Two loops: one's Python work overlaps the other's wait on the database (about 1.7x the rows/s of one).
    workers: int = 2
    retention_s: float = 7 * 24 * 3600.0
    purge_batch: int = 1000
    backoff: Backoff = field(default_factory=Backoff)
    # Pause after the outbox or the target failed, doubling up to the cap while it stays down.
    outage_pause_min_s: float = 0.1
    outage_pause_max_s: float = 5.0
    # After a partial batch, the next one starts at least this long after the last one started: under a
    # stream of small inserts the relay then delivers fewer, larger batches (each costs a few round trips).
    coalesce_ms: float = 5.0


CLAIM = compile_statement(
    select(
        events.c.seq,
        events.c.kind,
        # Text, not uuid.UUID (aiopg registers psycopg2's UUID adapter): keys are compared as strings.
        cast(events.c.key, Text),
        cast(events.c.interaction_id, Text),
        cast(events.c.payload, Text),
        events.c.attempts,
        events.c.created_at,
    )
    .where(events.c.state == PENDING, events.c.next_attempt_at <= func.now())
    .order_by(events.c.next_attempt_at, events.c.seq)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)

SECONDS_UNTIL_DUE = compile_statement(
    select(func.extract("epoch", func.min(events.c.next_attempt_at) - func.now()).cast(Float)).where(
        events.c.state == PENDING
    )
)

MARK_DELIVERED_SQL = f"""
UPDATE eco_outbox.events
SET state = '{DELIVERED}', delivered_at = now(), attempts = attempts + 1, last_error = NULL
WHERE seq = ANY(%(seqs)s::bigint[])
"""

MARK_HELD_SQL = f"""
UPDATE eco_outbox.events AS e
SET attempts = e.attempts + 1,
    state = d.state,
    next_attempt_at = now() + d.delay_ms * interval '1 millisecond',
    dead_at = CASE WHEN d.state = '{DEAD}' THEN now() END,
    last_error = d.error
FROM unnest(%(seqs)s::bigint[], %(states)s::text[], %(delays_ms)s::float8[], %(errors)s::text[])
    AS d(seq, state, delay_ms, error)
WHERE e.seq = d.seq
"""

# Signals that waited on an interaction this relay just delivered are due now, not at their backoff.
RELEASE_WAITING_SQL = f"""
UPDATE eco_outbox.events SET next_attempt_at = now()
WHERE state = '{PENDING}' AND kind = '{Kind.SIGNAL}' AND interaction_id = ANY(%(interaction_ids)s::uuid[])
  AND next_attempt_at > now()
"""


@dataclass(frozen=True)
class ClaimedRow:
    seq: int
    kind: Kind
    key: str
    interaction_id: str
    payload: str
    attempts: int
    created_at: datetime


@dataclass
class BatchOutcome:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released_interactions: list[str] = field(default_factory=list)


Deliverer = Callable[[Cursor, Sequence[str], Sequence[str]], Awaitable[delivery.DeliveryResult]]

DELIVERERS: dict[Kind, Deliverer] = {
    Kind.INTERACTION: delivery.deliver_interactions,
    Kind.INTERACTION_COMPLETION: delivery.deliver_completions,
    Kind.SIGNAL: delivery.deliver_signals,
}


class Relay:
    """Runs `settings.workers` delivery loops, each woken by `wake()`, its poll interval or a due row."""

    def __init__(
        self,
        outbox_pool: aiopg.Pool,
        target_pool: aiopg.Pool,
        settings: RelaySettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox_pool
        self._target = target_pool
        self._settings = settings
        self._rng = rng or random.Random()
        self._stopping = False
        self._wake_events: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def start(self) -> None:
        self._stopping = False
        self._wake_events = [asyncio.Event() for _ in range(self._settings.workers)]
        self._tasks = [
            asyncio.create_task(self._loop(event), name=f"outbox-relay-{i}")
            for i, event in enumerate(self._wake_events)
        ]

    def wake(self) -> None:
        """New rows: the first loop takes them, and calls in the others when it finds a full batch (so a
        trickle of rows does not send every loop to claim, most of them finding nothing)."""
        if self._wake_events:
            self._wake_events[0].set()

    def _wake_all(self) -> None:
        for event in self._wake_events:
            event.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let each worker finish the batch in hand, then return; cancel only what outlives `timeout_s`."""
        self._stopping = True
        self._wake_all()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            await cancel_and_wait(task)
        self._tasks = []

    async def _loop(self, wake: asyncio.Event) -> None:
        pause_s = self._settings.outage_pause_min_s
        coalesce_s = self._settings.coalesce_ms / 1000
        cycle_started = -coalesce_s
        while not self._stopping:
            if (delay_s := cycle_started + coalesce_s - time.monotonic()) > 0:
                await asyncio.sleep(delay_s)
            cycle_started = time.monotonic()
            # Cleared before the claim: a wake from now on means rows this batch may not have seen.
            wake.clear()
            try:
                outcome = await self.run_once()
                pause_s = self._settings.outage_pause_min_s
                if outcome.claimed >= self._settings.batch_size:
                    self._wake_all()
                    continue
                if wake.is_set():
                    continue
                timeout_s = await self._seconds_until_due()
            except CONNECTION_ERRORS as exc:
                metrics.RELAY_OUTAGES.inc()
                logger.bind(code="db_unavailable", delay_ms=round(pause_s * 1000)).warning(
                    "relay paused: database unavailable: {}", exc
                )
                timeout_s = pause_s
                pause_s = min(pause_s * 2, self._settings.outage_pause_max_s)
            except Exception:
                logger.bind(code="relay_error", delay_ms=round(pause_s * 1000)).exception(
                    "relay batch failed"
                )
                timeout_s = pause_s
                pause_s = min(pause_s * 2, self._settings.outage_pause_max_s)
            await self._wait(wake, timeout_s)

    async def _wait(self, wake: asyncio.Event, timeout_s: float) -> None:
        if self._stopping or timeout_s <= 0:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await wake.wait()
        except TimeoutError:
            pass

    async def _seconds_until_due(self) -> float:
        async with self._outbox.acquire() as conn, conn.cursor() as cur:
            await cur.execute(SECONDS_UNTIL_DUE.sql, SECONDS_UNTIL_DUE.params)
            row = await cur.fetchone()
        seconds = row[0] if row and row[0] is not None else self._settings.poll_s
        return max(0.0, min(seconds, self._settings.poll_s))

    async def run_once(self) -> BatchOutcome:
        """Claim, deliver and mark one batch. Connection errors leave every claimed row as it was."""
        started = time.perf_counter()
        outcome = BatchOutcome()
        async with self._outbox.acquire() as conn, conn.cursor() as cur:
            async with transaction(cur):
                await cur.execute(CLAIM.sql, CLAIM.bind(limit=self._settings.batch_size))
                rows = [ClaimedRow(*row) for row in await cur.fetchall()]
                if not rows:
                    return outcome
                outcome.claimed = len(rows)
                results = await self._deliver(rows)
                await self._mark(cur, rows, results, outcome)
        if outcome.released_interactions:
            async with self._outbox.acquire() as conn, conn.cursor() as cur:
                await cur.execute(RELEASE_WAITING_SQL, {"interaction_ids": outcome.released_interactions})
        metrics.RELAY_BATCH_ROWS.observe(outcome.claimed)
        metrics.RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        activity.RELAY_ACTIVITY.record_batch(outcome, time.perf_counter() - started)
        return outcome

    async def _deliver(self, rows: list[ClaimedRow]) -> dict[Kind, delivery.DeliveryResult]:
        by_kind: dict[Kind, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[Kind(row.kind)].append(row)
        results: dict[Kind, delivery.DeliveryResult] = {}
        async with self._target.acquire() as conn, conn.cursor() as cur:
            async with transaction(cur):
                for kind in DELIVERY_ORDER:
                    if kind in by_kind:
                        batch = by_kind[kind]
                        results[kind] = await DELIVERERS[kind](
                            cur, [row.key for row in batch], [row.payload for row in batch]
                        )
        return results

    async def _mark(
        self,
        cur: Cursor,
        rows: list[ClaimedRow],
        results: dict[Kind, delivery.DeliveryResult],
        outcome: BatchOutcome,
    ) -> None:
        now = datetime.now(UTC)
        delivered: list[int] = []
        delivered_by_kind: Counter[Kind] = Counter()
        held_seqs: list[int] = []
        held_states: list[str] = []
        held_delays_ms: list[float] = []
        held_errors: list[str] = []
        for row in rows:
            kind = Kind(row.kind)
            result = results[kind]
            if row.key in result.delivered:
                delivered.append(row.seq)
                delivered_by_kind[kind] += 1
                if kind is not Kind.SIGNAL:
                    outcome.released_interactions.append(row.interaction_id)
                continue
            reason = result.held.get(row.key, "not_written")
            attempt = row.attempts + 1
            age_s = (now - row.created_at).total_seconds()
            log = logger.bind(interaction_id=row.interaction_id, signal=row.key, attempt=attempt, code=reason)
            if attempt >= self._settings.max_attempts or age_s >= self._settings.max_age_s:
                held_states.append(DEAD)
                held_delays_ms.append(0.0)
                metrics.RELAY_DEAD.labels(kind=kind, reason=reason).inc()
                outcome.dead += 1
                log.warning("dead-lettered {} after {} attempts ({:.0f} s old)", kind, attempt, age_s)
            else:
                delay_ms = self._settings.backoff.delay_ms(attempt, self._rng)
                held_states.append(PENDING)
                held_delays_ms.append(delay_ms)
                metrics.RELAY_RETRIED.labels(kind=kind, reason=reason).inc()
                outcome.retried += 1
                log.bind(delay_ms=round(delay_ms)).info("retrying {}: {}", kind, reason)
            held_seqs.append(row.seq)
            held_errors.append(reason)
        # Counted per batch, not per row: at tens of thousands of rows a second, per-row metric and log
        # calls cost more than the SQL.
        for kind, count in delivered_by_kind.items():
            metrics.RELAY_DELIVERED.labels(kind=kind).inc(count)
            logger.debug("delivered {} {} rows", count, kind)
        if delivered:
            await cur.execute(MARK_DELIVERED_SQL, {"seqs": delivered})
        if held_seqs:
            await cur.execute(
                MARK_HELD_SQL,
                {
                    "seqs": held_seqs,
                    "states": held_states,
                    "delays_ms": held_delays_ms,
                    "errors": held_errors,
                },
            )
        outcome.delivered = len(delivered)
