"""The relay: claims due outbox rows, writes them to the target, moves the delivered ones to the log of
delivered rows and marks the others retried or dead.

Claims hold row locks (FOR UPDATE SKIP LOCKED) in an outbox transaction that stays open while the target is
written, so relays in any number of processes never work on the same row at once; a relay that dies mid-batch
drops its locks and another delivers the rows again, idempotently. A relay that freezes (SIGSTOP, a paused
VM) loses its claim after `claim_timeout_s`: the server ends its idle transactions; a working relay renews its
claim while it writes the target. docs/relay-timing.md tells how each step survives concurrent relays.

Failures come in these classes, decided by SQLSTATE (outbox.errors.classify):
- waiting: a child row's parent is not in the target yet. The row backs off and is charged an attempt, unless
  its parent is still pending in the outbox; it is released (or revived from dead) when its parent lands.
  An orphan (its parent in neither the outbox nor the target) has a shorter bound, `orphan_max_attempts`.
  Only waiting rows (a parent, or an alias, that never comes) die of age; every other row is bounded by its
  attempts.
- unknown kind: a row of a kind this target does not deliver is left to the releases that do (a newer one
  beside this one during an upgrade). Once it is older than `max_age_s`, none took it (a release rolled
  back): it is claimed and dead-lettered alone as `unknown_kind`, listed and requeueable like any other.
- outage: a database unreachable, a session lost, a statement cancelled. The loop pauses with growing
  delays that a NOTIFY does not cut short; no row is charged.
- refused: the target rejects some rows. The batch is bisected in the same pass, so every other row is
  delivered; each refused row is charged an attempt with its SQLSTATE and message, and dies at the limit.
- internal: an exception with no SQLSTATE that is not a connection's (a bug, a row the code cannot handle).
  Logged with its traceback once per batch; the rows that raise it are isolated and charged as refused rows.
An error every row would hit (missing table, permission denied) makes the relay not ready; no row is charged.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import aiopg
from aiopg import Cursor
from loguru import logger

from outbox import activity
from outbox.aliases import regroup_claimed
from outbox.background import LoopHealth, cancel_and_wait, supervise
from outbox.backoff import Backoff
from outbox.errors import Failure, classify, describe, server_cancelled, sqlstate
from outbox.metrics import outbox_metrics
from outbox.names import OutboxNames
from outbox.queries import queries
from outbox.sqlutil import savepoint, transaction
from outbox.tables import DEAD, PENDING
from outbox.target import PARENT_MISSING, DeliveryResult, Target


@dataclass(frozen=True)
class RelaySettings:
    # Rows claimed per batch: larger batches spread the per-statement costs (see docs/performance.md).
    batch_size: int = 1000
    poll_s: float = 1.0
    max_attempts: int = 20
    max_age_s: float = 3600.0
    # A child whose parent is in neither the outbox nor the target (an orphan: anyone may post one) dies
    # after this many attempts, not `max_attempts`: with the default backoff, 25-50 s after it was first
    # tried, long enough for a parent another writer puts in the target late.
    orphan_max_attempts: int = 12
    # Delivery loops: one's Python work overlaps the other's wait on the database (see docs/performance.md).
    loops: int = 2
    backoff: Backoff = field(default_factory=Backoff)
    # Pause after the outbox or the target failed, doubling up to the cap while it stays down.
    outage_pause_min_s: float = 0.1
    outage_pause_max_s: float = 5.0
    # After a partial batch, the next one starts at least this long after the last batch any loop started:
    # under a stream of small inserts the relay then delivers fewer, larger batches (each costs a few round
    # trips; docs/performance.md has the figures).
    coalesce_ms: float = 10.0
    # A frozen relay's claim (and its open target transaction) ends after this long idle: its rows go to
    # the other relays. A working relay renews its claim every third of it while it writes the target.
    claim_timeout_s: float = 60.0
    # Statements the isolation of refused rows may run per batch; the rows it has not reached by then are
    # held without a charge, due at once, and isolated in the next pass.
    isolation_statements: int = 200
    # A loop whose last this many batches failed makes /readyz answer 503.
    unhealthy_batches: int = 3


# Held without a charge: the child's parent is still in the outbox, on its way.
PARENT_PENDING = "parent_pending"
# Held without a charge, due at once: the batch's isolation budget ran out before it reached the row.
NOT_ISOLATED = "not_isolated"
# Dead at once: the row's kind has no deliverer here, and no release that has one took it within the max age.
UNKNOWN_KIND = "unknown_kind"
# Failures whose rows are looked for in the batch (bisected), so that the rest of it is delivered.
ISOLATED_FAILURES = frozenset({Failure.REFUSED, Failure.INTERNAL})


def held_reasons(target: Target) -> tuple[str, ...]:
    """The reasons a relay holds a child row for, known at start (metrics export them at 0 from the first
    scrape); refusals add `refused_<SQLSTATE>` as they come."""
    aliases = (target.unresolved_reason,) if target.alias_kind is not None else ()
    return (PARENT_MISSING, PARENT_PENDING, NOT_ISOLATED, *aliases)


# Where a batch may be paused, in order: rows claimed, rows marked (the claim still open), claim committed.
# Production passes no pause; tests pass one to pin an interleaving of two relays.
PAUSE_CLAIMED = "claimed"
PAUSE_MARKED = "marked"
PAUSE_COMMITTED = "committed"
Pause = Callable[[str], Awaitable[None]]
# The claim's last renewal, which a target transaction runs just before it commits (Relay._claim_renewed).
Fence = Callable[[], Awaitable[None]]


async def _no_pause(point: str) -> None:
    return None


@dataclass(frozen=True)
class ClaimedRow:
    seq: int
    kind: str
    key: str
    group_key: str
    payload: str
    attempts: int
    age_s: float


@dataclass
class _Budget:
    statements: int


@dataclass
class _HeldGroup:
    """Rows of one kind held (or dead) for one reason in one batch, and the first of them as the example."""

    example: ClaimedRow
    error: str
    attempt: int
    delay_ms: float | None
    count: int = 0


@dataclass
class _HeldLines:
    """One log line per kind, reason and verdict in a batch, not one per row: a flood of held rows (orphans
    anyone may post, a refused column) must not become a flood of log lines. The line carries the first row's
    context (group, key, attempt, delay) as an example and the count of the rest."""

    groups: dict[tuple[str, str, bool], _HeldGroup] = field(default_factory=dict)

    def add(self, row: ClaimedRow, reason: str, error: str, attempt: int, delay_ms: float | None) -> None:
        group = self.groups.setdefault(
            (row.kind, reason, delay_ms is None), _HeldGroup(row, error, attempt, delay_ms)
        )
        group.count += 1

    def log(self, group_field: str, key_field: str) -> None:
        for (kind, reason, dead), group in self.groups.items():
            row = group.example
            log = logger.bind(
                **{group_field: row.group_key, key_field: row.key}, code=reason, attempt=group.attempt
            )
            if dead:
                log.warning(
                    "dead-lettered {} {} row(s), e.g. {} after {} attempts ({:.0f} s old): {}",
                    group.count,
                    kind,
                    row.key,
                    group.attempt,
                    row.age_s,
                    group.error,
                )
            else:
                log.bind(delay_ms=round(group.delay_ms or 0.0)).info(
                    "retrying {} {} row(s), e.g. {}: {}", group.count, kind, row.key, group.error
                )


@dataclass
class BatchOutcome:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    # Groups whose children may be due now: a parent this batch delivered, or a child it held because its
    # parent was pending (that parent may have landed while this claim was open).
    release_groups: list[str] = field(default_factory=list)


class Relay:
    """Runs `settings.loops` delivery loops, each woken by `wake()`, its poll interval or a due row."""

    def __init__(
        self,
        outbox_pool: aiopg.Pool,
        target_pool: aiopg.Pool,
        target: Target,
        settings: RelaySettings,
        *,
        names: OutboxNames,
        rng: random.Random | None = None,
        pause: Pause = _no_pause,
    ) -> None:
        self._outbox = outbox_pool
        self._sql = queries(names)
        self._metrics = outbox_metrics(names)
        self._target = target_pool
        self._deliverers = target.deliverers
        self._child_kinds = target.child_kinds
        self._parent_kinds = target.parent_kinds
        self._group_field, self._key_field = target.log_fields
        self._alias_kind = target.alias_kind
        self._unresolved = target.unresolved_reason
        self._shown_kinds, self._shown_paths = target.status_paths
        # Held reasons that wait for another row to arrive, and so are bounded by age as well as attempts.
        self._waiting_reasons = frozenset({PARENT_MISSING, target.unresolved_reason})
        self._settings = settings
        self._claim_timeout_ms = round(settings.claim_timeout_s * 1000)
        self._renew_s = settings.claim_timeout_s / 3
        self._rng = rng or random.Random()
        self._pause_at = pause
        self._stopping = False
        self._stopped = asyncio.Event()
        self._wake_events: list[asyncio.Event] = []
        # The wake events of the loops waiting for rows (not in a batch), in the order they began to wait.
        self._waiting: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        # When the last batch began, any loop's: the coalescing interval counts from it.
        self._batch_started_s = -math.inf
        self.loops: list[LoopHealth] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def problems(self) -> list[str]:
        """Why the relay is not ready: a loop not running, or one whose last batches all failed."""
        if not self.running:
            return ["relay not running"]
        return [
            f"{loop.name}: last {loop.consecutive_failures} batches failed"
            f" ({loop.last_failure_class}: {loop.last_failure})"
            for loop in self.loops
            if loop.consecutive_failures >= self._settings.unhealthy_batches
        ]

    def start(self) -> None:
        self._stopping = False
        self._stopped.clear()
        self._wake_events = [asyncio.Event() for _ in range(self._settings.loops)]
        self._waiting = []
        self.loops = [LoopHealth(f"outbox-relay-{i}") for i in range(self._settings.loops)]
        self._tasks = [
            asyncio.create_task(self._supervised(event, health), name=health.name)
            for event, health in zip(self._wake_events, self.loops, strict=True)
        ]

    def wake(self) -> None:
        """New rows: one waiting loop takes them at once, the first; a trickle of rows does not send every
        loop to claim, most of them finding nothing, and a loop finding a full batch calls in the others.
        With no loop waiting, each claims again as soon as its batch is over, with no look at the due times
        first: under a stream of rows every batch ends with new ones waiting."""
        if self._waiting:
            self._waiting.pop(0).set()
            return
        for event in self._wake_events:
            event.set()

    def _wake_all(self) -> None:
        for event in self._wake_events:
            event.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let each worker finish the batch in hand, then return; cancel only what outlives `timeout_s`."""
        self._stopping = True
        self._stopped.set()
        self._wake_all()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            await cancel_and_wait(task)
        self._tasks = []

    async def _supervised(self, wake: asyncio.Event, health: LoopHealth) -> None:
        await supervise(health, lambda: self._loop(wake, health), self._metrics.loop_restarts)

    async def _loop(self, wake: asyncio.Event, health: LoopHealth) -> None:
        pause_s = self._settings.outage_pause_min_s
        full = True
        while not self._stopping:
            if not full:
                await self._coalesce()
            self._batch_started_s = time.monotonic()
            # Cleared before the claim: a wake from now on means rows this batch may not have seen.
            wake.clear()
            full = False
            try:
                outcome = await self.run_once()
                health.succeeded()
                pause_s = self._settings.outage_pause_min_s
                if outcome.claimed >= self._settings.batch_size:
                    full = True
                    self._wake_all()
                    continue
                if wake.is_set():
                    continue
                timeout_s = await self._seconds_until_due()
            except asyncio.CancelledError as exc:
                if not server_cancelled(exc):
                    raise
                self._failed(health, exc, pause_s)
            except Exception as exc:
                self._failed(health, exc, pause_s)
            else:
                await self._wait(wake, timeout_s)
                continue
            # Not cut short by a wake: under intake load a NOTIFY comes every few milliseconds, and the
            # database that just failed would be hit as often.
            await self._pause(pause_s)
            pause_s = min(pause_s * 2, self._settings.outage_pause_max_s)

    def _failed(self, health: LoopHealth, exc: BaseException, pause_s: float) -> None:
        """A batch failed as a whole: no row is charged; the loop records why and pauses."""
        failure = classify(exc)
        error = describe(exc)
        health.failed(failure, error)
        self._metrics.relay_batch_failures.labels(failure=failure).inc()
        log = logger.bind(code=sqlstate(exc) or "db_unavailable", delay_ms=round(pause_s * 1000))
        if failure is Failure.OUTAGE:
            self._metrics.relay_outages.inc()
            log.warning("relay paused: database unavailable: {}", error)
        elif failure is Failure.INTERNAL:
            log.bind(code="relay_internal_error").opt(exception=exc).error("relay batch failed: {}", error)
        else:
            log.error("relay paused: target not ready ({}): {}", failure, error)

    async def _coalesce(self) -> None:
        """After a partial batch, wait until `coalesce_ms` after the last batch any loop started: under a
        stream of rows the loops together start one batch per interval, not one each."""
        coalesce_s = self._settings.coalesce_ms / 1000
        while not self._stopping and (delay_s := self._batch_started_s + coalesce_s - time.monotonic()) > 0:
            await self._pause(delay_s)

    async def _pause(self, pause_s: float) -> None:
        try:
            async with asyncio.timeout(pause_s):
                await self._stopped.wait()
        except TimeoutError:
            pass

    async def _wait(self, wake: asyncio.Event, timeout_s: float) -> None:
        if self._stopping or timeout_s <= 0:
            return
        self._waiting.append(wake)
        try:
            async with asyncio.timeout(timeout_s):
                await wake.wait()
        except TimeoutError:
            pass
        finally:
            if wake in self._waiting:
                self._waiting.remove(wake)

    async def _seconds_until_due(self) -> float:
        async with self._outbox.acquire() as conn, conn.cursor() as cur:
            await cur.execute(self._sql["seconds_until_due"].sql, dict(kinds=list(self._deliverers)))
            row = await cur.fetchone()
        seconds = row[0] if row and row[0] is not None else self._settings.poll_s
        return max(0.0, min(seconds, self._settings.poll_s))

    async def run_once(self) -> BatchOutcome:
        """Claim, deliver and mark one batch. A failure of the whole batch leaves every claimed row as it
        was; rows the target refuses are isolated and charged, the rest delivered."""
        started = time.perf_counter()
        outcome = BatchOutcome()
        async with self._outbox.acquire() as conn, conn.cursor() as cur:
            async with transaction(
                cur,
                idle_timeout_ms=self._claim_timeout_ms,
                first=self._sql["claim"].sql,
                params=dict(
                    limit=self._settings.batch_size,
                    kinds=list(self._deliverers),
                    unknown_after=timedelta(seconds=self._settings.max_age_s),
                ),
            ):
                rows = [ClaimedRow(*row) for row in await cur.fetchall()]
                if not rows:
                    return outcome
                outcome.claimed = len(rows)
                await self._pause_at(PAUSE_CLAIMED)
                async with self._claim_renewed(cur) as fence:
                    results = await self._deliver(rows, fence)
                await self._mark(cur, rows, results, outcome)
                await self._regroup_unresolved(cur, rows, results)
                await self._pause_at(PAUSE_MARKED)
        await self._pause_at(PAUSE_COMMITTED)
        if outcome.release_groups:
            await self._release(outcome.release_groups)
        self._metrics.relay_batch_rows.observe(outcome.claimed)
        self._metrics.relay_batch_seconds.observe(time.perf_counter() - started)
        activity.RELAY_ACTIVITY.record_batch(outcome, time.perf_counter() - started)
        return outcome

    @asynccontextmanager
    async def _claim_renewed(self, cur: Cursor) -> AsyncIterator[Fence]:
        """Keep the claim while the target is written, and hand out the fence the target's commit passes.

        The claim's lease is its session's idle time (`idle_in_transaction_session_timeout`), and that
        session sits idle while the relay works on the target's connection: a target phase longer than the
        claim timeout (a remote target, a bisection) would lose the claim every time. So the claim's session
        runs a trivial statement every third of the timeout, from a task of this process: a relay that
        freezes stops renewing with it, and loses its claim as before.

        A relay frozen after its claim was read and woken after the claim was ended would go on to write
        rows another relay has since delivered. The fence is one last renewal, run inside the target
        transaction just before it commits: a claim lost meanwhile fails it, and the target write rolls back.
        """
        done = asyncio.Event()

        async def renew() -> None:
            while not done.is_set():
                try:
                    async with asyncio.timeout(self._renew_s):
                        await done.wait()
                except TimeoutError:
                    await cur.execute(self._sql["renew_claim"].sql)

        async def stop_renewing() -> None:
            # Never cancelled mid-statement (aiopg would close the connection): it ends at its next check.
            done.set()
            await asyncio.gather(renewing, return_exceptions=True)

        async def fence() -> None:
            await stop_renewing()
            await cur.execute(self._sql["renew_claim"].sql)

        renewing = asyncio.create_task(renew())
        try:
            yield fence
        finally:
            await stop_renewing()

    async def _release(self, group_keys: list[str]) -> None:
        """Make due now the children of `group_keys` whose parent is delivered, in a statement that starts
        after this batch's commit.

        An UPDATE matches rows by their committed version and skips, without waiting, a row another relay has
        claimed but not yet marked: the release run by a parent's relay misses a child that a concurrent batch
        is about to hold as `parent_pending`. So the relay that holds a child for a pending parent releases it
        too, after its own commit. One of the two statements always starts after both commits (the parent's
        and the hold), sees the parent delivered and the child held, and releases it.
        """
        async with self._outbox.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                self._sql["release_waiting"].sql,
                dict(
                    child_kinds=self._child_kinds,
                    parent_kinds=self._parent_kinds,
                    group_keys=sorted(set(group_keys)),
                    parent_missing=PARENT_MISSING,
                ),
            )

    async def _deliver(self, rows: list[ClaimedRow], fence: Fence) -> dict[str, DeliveryResult]:
        by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        # A kind without a deliverer here is claimed only once older than the max age: it dies alone.
        results = {
            kind: DeliveryResult(held={row.key: UNKNOWN_KIND for row in batch})
            for kind, batch in by_kind.items()
            if kind not in self._deliverers
        }
        known = {kind: batch for kind, batch in by_kind.items() if kind in self._deliverers}
        if known:
            results |= await self._write_known(known, len(rows), fence)
        return results

    async def _write_known(
        self, by_kind: dict[str, list[ClaimedRow]], count: int, fence: Fence
    ) -> dict[str, DeliveryResult]:
        """Write the batch in one statement per kind; if that fails for some rows, isolate them."""
        try:
            return await self._write(by_kind, fence, isolate=False)
        except Exception as exc:
            failure = classify(exc)
            if failure not in ISOLATED_FAILURES:
                raise
            log = logger.bind(code=sqlstate(exc) or "relay_internal_error")
            if failure is Failure.INTERNAL:
                # Once per batch, with the traceback: the isolation below meets it again row by row.
                log.opt(exception=exc).error(
                    "delivery failed on a batch of {}, isolating the rows at fault: {}", count, describe(exc)
                )
            else:
                log.warning("target refused a row of a batch of {}, isolating it: {}", count, describe(exc))
        return await self._write(by_kind, fence, isolate=True)

    async def _write(
        self, by_kind: dict[str, list[ClaimedRow]], fence: Fence, *, isolate: bool
    ) -> dict[str, DeliveryResult]:
        """One statement per kind; with `isolate`, each under a savepoint and bisected when refused. The
        target commits only past the claim's fence: while the claim holds."""
        results: dict[str, DeliveryResult] = {}
        budget = _Budget(self._settings.isolation_statements)
        async with self._target.acquire() as conn, conn.cursor() as cur:
            async with transaction(cur, idle_timeout_ms=self._claim_timeout_ms):
                for kind in self._deliverers:
                    if kind in by_kind:
                        batch = by_kind[kind]
                        if isolate:
                            results[kind] = await self._isolate(cur, kind, batch, budget)
                        else:
                            results[kind] = await self._deliverers[kind](
                                cur, [row.key for row in batch], [row.payload for row in batch]
                            )
                await fence()
        return results

    async def _isolate(
        self, cur: Cursor, kind: str, rows: list[ClaimedRow], budget: _Budget
    ) -> DeliveryResult:
        """Write `rows`; if the target refuses them, split in halves down to the single rows it refuses, so a
        batch with k refused rows costs about 2k log2(n) statements, and only on this failure path. The
        batch's `budget` bounds that work (a remote target, dozens of refused rows): depth first, each pass
        isolates some refused rows at least, and holds what it did not reach for the next."""
        if budget.statements <= 0:
            return DeliveryResult(held={row.key: NOT_ISOLATED for row in rows})
        budget.statements -= 1
        try:
            async with savepoint(cur, "isolate"):
                return await self._deliverers[kind](
                    cur, [row.key for row in rows], [row.payload for row in rows]
                )
        except Exception as exc:
            failure = classify(exc)
            if failure not in ISOLATED_FAILURES:
                raise
            if len(rows) == 1:
                code = sqlstate(exc) or Failure.INTERNAL.value
                self._metrics.relay_refused.labels(kind=kind, sqlstate=code).inc()
                error = describe(exc) if failure is Failure.REFUSED else f"{code}: {describe(exc)}"
                return DeliveryResult(refused={rows[0].key: error})
        middle = len(rows) // 2
        first = await self._isolate(cur, kind, rows[:middle], budget)
        return first.merged(await self._isolate(cur, kind, rows[middle:], budget))

    async def _regroup_unresolved(
        self, cur: Cursor, rows: list[ClaimedRow], results: dict[str, DeliveryResult]
    ) -> None:
        """Rows held because their alias was not named: those named by now move to their group, due now."""
        if self._alias_kind is None:
            return
        seqs = [row.seq for row in rows if results[row.kind].held.get(row.key) == self._unresolved]
        if seqs:
            await regroup_claimed(cur, self._sql, self._alias_kind, seqs)

    async def _parent_states(self, cur: Cursor, group_keys: set[str]) -> dict[str, bool]:
        """Group key -> True if its parent is still pending in the outbox, False if delivered; absent if
        neither."""
        if not group_keys:
            return {}
        await cur.execute(
            self._sql["parent_states"].sql,
            dict(parent_kinds=self._parent_kinds, group_keys=list(group_keys)),
        )
        return {key: pending for key, pending in await cur.fetchall()}

    async def _mark(
        self,
        cur: Cursor,
        rows: list[ClaimedRow],
        results: dict[str, DeliveryResult],
        outcome: BatchOutcome,
    ) -> None:
        delivered: list[int] = []
        delivered_by_kind: Counter[str] = Counter()
        held_seqs: list[int] = []
        held_charges: list[int] = []
        held_states: list[str] = []
        held_delays_ms: list[float] = []
        held_errors: list[str] = []
        lines = _HeldLines()
        parents = await self._parent_states(
            cur,
            {row.group_key for row in rows if results[row.kind].held.get(row.key) == PARENT_MISSING},
        )
        for row in rows:
            kind = row.kind
            result = results[kind]
            if row.key in result.delivered:
                delivered.append(row.seq)
                delivered_by_kind[kind] += 1
                if kind in self._parent_kinds:
                    outcome.release_groups.append(row.group_key)
                continue
            held_seqs.append(row.seq)
            if (refusal := result.refused.get(row.key)) is not None:
                reason, error = f"refused_{refusal.split(':', 1)[0]}", refusal
            else:
                reason = error = result.held.get(row.key, "not_written")
            if reason == NOT_ISOLATED:
                held_charges.append(0)
                held_states.append(PENDING)
                held_delays_ms.append(0.0)
                held_errors.append(NOT_ISOLATED)
                self._metrics.relay_retried.labels(kind=kind, reason=NOT_ISOLATED).inc()
                outcome.retried += 1
                continue
            parent_pending = parents.get(row.group_key) if reason == PARENT_MISSING else None
            if parent_pending:
                # Its parent is on its way: released when it lands, so this costs neither attempts nor age.
                held_charges.append(0)
                held_states.append(PENDING)
                held_delays_ms.append(self._settings.backoff.cap_ms)
                held_errors.append(PARENT_PENDING)
                outcome.release_groups.append(row.group_key)
                self._metrics.relay_retried.labels(kind=kind, reason=PARENT_PENDING).inc()
                outcome.retried += 1
                continue
            attempt = row.attempts + 1
            held_charges.append(1)
            held_errors.append(error)
            # A parent delivered by a concurrent batch: the miss was a race, due again now, and its age
            # (which an outage may have spent) does not kill it; its attempts still bound it.
            raced = parent_pending is False
            # Age bounds waiting only (a parent or an alias that never comes): any other row, a parent among
            # them, is bounded by its attempts, which an outage does not spend while its age grows.
            waiting = reason in self._waiting_reasons
            too_old = waiting and row.age_s >= self._settings.max_age_s and not raced
            max_attempts = self._settings.max_attempts
            if reason == PARENT_MISSING and parent_pending is None:
                max_attempts = min(max_attempts, self._settings.orphan_max_attempts)
            if attempt >= max_attempts or too_old or reason == UNKNOWN_KIND:
                held_states.append(DEAD)
                held_delays_ms.append(0.0)
                self._metrics.relay_dead.labels(kind=kind, reason=reason).inc()
                outcome.dead += 1
                lines.add(row, reason, error, attempt, None)
            else:
                delay_ms = 0.0 if raced else self._settings.backoff.delay_ms(attempt, self._rng)
                held_states.append(PENDING)
                held_delays_ms.append(delay_ms)
                self._metrics.relay_retried.labels(kind=kind, reason=reason).inc()
                outcome.retried += 1
                lines.add(row, reason, error, attempt, delay_ms)
        lines.log(self._group_field, self._key_field)
        # Counted per batch, not per row: at tens of thousands of rows a second, per-row metric and log
        # calls cost more than the SQL.
        for kind, count in delivered_by_kind.items():
            self._metrics.relay_delivered.labels(kind=kind).inc(count)
            logger.debug("delivered {} {} rows", count, kind)
        if delivered:
            await cur.execute(
                self._sql["move_delivered"].sql,
                dict(
                    seqs=delivered,
                    alias_kind=self._alias_kind,
                    shown_kinds=self._shown_kinds,
                    shown_paths=self._shown_paths,
                ),
            )
        if held_seqs:
            await cur.execute(
                self._sql["mark_held"].sql,
                dict(
                    seqs=held_seqs,
                    charges=held_charges,
                    states=held_states,
                    delays_ms=held_delays_ms,
                    errors=held_errors,
                ),
            )
        outcome.delivered = len(delivered)
