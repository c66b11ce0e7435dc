"""Rows filed under an alias of their group, until a later row names the group the alias stands for.

A client may know a row's parent only by a name of its own at first (an id it made up before the server's
was known). Such a row is enqueued with the alias as its group, and its deliverer holds it. A later row of
the target's `alias_kind`, keyed by the alias and grouped under the real group, names the group: the held
rows then move to that group, with the alias row's payload merged into theirs, and are delivered, waited on
and released as any row of the group is.

Both orders are covered without a lock. The caller that enqueues the alias row regroups once it has
committed (`regroup`), which finds every held row committed before; a held row committed after that is
claimed by a relay later still, which regroups it when its deliverer holds it (`regroup_claimed`). A
process that dies between the commit and the regroup leaves the rows to the relay the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiopg
from aiopg import Cursor

from outbox.names import OutboxNames
from outbox.queries import queries
from outbox.sql import Statements
from outbox.sqlutil import transaction

# A row a relay holds is waited for; a relay stuck on its target must not hold the caller (a request) as
# long: past this wait the move is left to the relay, which makes it when it next holds the row.
REGROUP_LOCK_TIMEOUT_MS = 1000


async def regroup(
    pool: aiopg.Pool,
    names: OutboxNames,
    alias_kind: str,
    aliases: Sequence[str],
    lock_timeout_ms: int = REGROUP_LOCK_TIMEOUT_MS,
) -> list[int]:
    """Move the rows filed under `aliases` to the groups their (committed) alias rows name; raises the
    lock timeout (55P03) when a row stayed locked longer than `lock_timeout_ms`."""
    if not aliases:
        return []
    async with pool.acquire() as conn, conn.cursor() as cur, transaction(cur):
        await cur.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        statement = queries(names)["regroup"]
        await cur.execute(statement.sql, dict(alias_kind=alias_kind, aliases=list(aliases)))
        return [row[0] for row in await cur.fetchall()]


async def regroup_claimed(cur: Cursor, sql: Statements, alias_kind: str, seqs: Sequence[int]) -> list[int]:
    """In the relay's claim transaction: move the claimed rows in `seqs` whose alias is named by now."""
    statement = sql["regroup_seqs"]
    await cur.execute(statement.sql, dict(alias_kind=alias_kind, seqs=list(seqs)))
    return [row[0] for row in await cur.fetchall()]
