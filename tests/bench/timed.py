"""Per-statement timings of a relay drain: pools whose cursors time every statement the relay runs, named by
the `-- name:` of its section in the engine's or the target's `.sql` file, so that the report follows the
statements the relay runs today (whatever marks a row delivered: an UPDATE, or a DELETE and a log insert).

The wrappers only time `execute` (its round trip included): a bench instrument, never used by the service.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiopg

from outbox.queries import queries
from service.store.outbox_names import OUTBOX_NAMES
from service.target.queries import TARGET_QUERIES

# What rides in front of a statement in the same round trip (outbox.sqlutil): a BEGIN and its SET LOCAL,
# a SAVEPOINT.
_PREFIX = re.compile(r"^(BEGIN(; SET LOCAL [^;]+)?|SAVEPOINT \w+)(; |$)")
_CONTROL = {
    "BEGIN": "begin",
    "COMMIT": "commit",
    "ROLLBACK": "rollback",
    "SAVEPOINT": "savepoint",
}


def _known_statements() -> dict[str, str]:
    known = {statement.sql.strip(): name for name, statement in queries(OUTBOX_NAMES).items()}
    known.update({statement.sql.strip(): name for name, statement in TARGET_QUERIES.items()})
    return known


KNOWN = _known_statements()


def statement_name(sql: str) -> str:
    """The name of the statement `sql` runs (the last of the round trip), or its first word."""
    text = sql.strip()
    first = ""
    while text and (prefix := _PREFIX.match(text)) is not None:
        first = first or prefix.group(1).split(";")[0].split()[0]
        text = text[prefix.end() :]
    if not text:
        return _CONTROL[first]
    if (name := KNOWN.get(text.strip())) is not None:
        return name
    word = text.split(None, 1)[0].upper() if text else ""
    if word == "RELEASE":
        return "release savepoint"
    return _CONTROL.get(word, f"other ({text[:30]})")


@dataclass
class Timings:
    """Seconds and calls per (database side, statement name); batches = claims that returned rows."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    rows: int = 0

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] += seconds
        self.calls[key] += 1

    def per_batch_ms(self) -> dict[str, float]:
        """Each statement's mean milliseconds per batch, the costliest first."""
        batches = max(self.batches, 1)
        ordered = sorted(self.seconds.items(), key=lambda item: -item[1])
        return {key: seconds * 1000 / batches for key, seconds in ordered}

    def summary(self) -> str:
        per_batch = self.per_batch_ms()
        total_ms = sum(per_batch.values())
        rows = self.rows / max(self.batches, 1)
        statements = ", ".join(f"{key} {ms:.1f}" for key, ms in per_batch.items() if ms >= 0.05)
        bound = rows / total_ms * 1000 if total_ms else float("nan")
        return (
            f"{self.batches:,} batches of {rows:,.0f} rows; ms per batch: {statements}; all statements"
            f" {total_ms:.1f} ms, so one loop's statements alone cap it at {bound:,.0f} rows/s"
        )


class _Cursor:
    def __init__(self, cur: aiopg.Cursor, side: str, timings: Timings) -> None:
        self._cur = cur
        self._side = side
        self._timings = timings

    async def execute(self, sql: str, params: Mapping[str, Any] | Any = None) -> None:
        started = time.perf_counter()
        try:
            await self._cur.execute(sql, params)
        finally:
            name = statement_name(sql)
            self._timings.add(f"{self._side} {name}", time.perf_counter() - started)
        if name == "claim" and self._cur.rowcount > 0:
            self._timings.batches += 1
            self._timings.rows += self._cur.rowcount

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class _Connection:
    def __init__(self, conn: aiopg.Connection, side: str, timings: Timings) -> None:
        self._conn = conn
        self._side = side
        self._timings = timings

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[_Cursor]:
        async with self._conn.cursor() as cur:
            yield _Cursor(cur, self._side, self._timings)


class TimedPool:
    """An aiopg pool as the relay uses it (`acquire()`, then `cursor()`), timing each statement."""

    def __init__(self, pool: aiopg.Pool, side: str, timings: Timings) -> None:
        self._pool = pool
        self._side = side
        self._timings = timings

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Connection]:
        async with self._pool.acquire() as conn:
            yield _Connection(conn, self._side, self._timings)
