"""Reads that must not grow with retention: an interaction's status goes through its index, is bounded and
rate-limited; the /metrics counts read the pending and dead partial indexes, never the delivered rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import aiopg

from outbox.queries import queries
from service.http.views.status import STATUS_MAX_ROWS
from service.store.outbox_names import OUTBOX_NAMES
from tests.helpers import fetch

# Enough delivered rows that a full scan costs more to the planner than any index.
RETAINED_ROWS = 20_000

RETAIN_SQL = """
INSERT INTO eco_outbox.events (kind, key, group_key, payload, state, delivered_at)
SELECT 'signal', gen_random_uuid(), %(interaction_id)s::uuid,
       jsonb_build_object('signal', 'view', 'meta', '{"type": "passive"}'), %(state)s, now()
FROM generate_series(1, %(rows)s)
"""


# The log of delivered rows, as this release's relay leaves it; some rows carry a dedupe key.
RETAIN_LOG_SQL = """
INSERT INTO eco_outbox.events_delivered
    (key, kind, group_key, seq, dedupe_key, attempts, created_at, delivered_at, summary)
SELECT gen_random_uuid(), 'signal', %(interaction_id)s::uuid, -n, CASE WHEN n %% 10 = 0 THEN 'd:' || n END, 1,
       now(), now(), '{"signal": "view", "meta.type": "passive"}'
FROM generate_series(1, %(rows)s) AS n
"""


async def retain(
    db: aiopg.Pool, rows: int, *, interaction_id: str | None = None, state: str = "delivered"
) -> None:
    params = {"interaction_id": interaction_id or str(uuid.uuid4()), "state": state, "rows": rows}
    await fetch(db, RETAIN_SQL, params)


async def plan(db: aiopg.Pool, sql: str, params: dict[str, Any]) -> str:
    """The plan's node types and index names, flattened to text."""
    [(document,)] = await fetch(db, "EXPLAIN (FORMAT JSON) " + sql, params)
    return json.dumps(document)


async def many_retained(db: aiopg.Pool) -> None:
    """Many delivered rows over many groups, and a few pending and dead ones."""
    await fetch(
        db,
        RETAIN_SQL.replace("%(interaction_id)s::uuid", "gen_random_uuid()"),
        {"state": "delivered", "rows": RETAINED_ROWS},
    )
    await retain(db, 3, state="pending")
    await retain(db, 2, state="dead")
    await fetch(
        db, RETAIN_LOG_SQL.replace("%(interaction_id)s::uuid", "gen_random_uuid()"), {"rows": RETAINED_ROWS}
    )
    await fetch(db, "ANALYZE eco_outbox.events_delivered")


async def test_status_and_stats_read_through_indexes(db: aiopg.Pool) -> None:
    await many_retained(db)
    await fetch(db, "ANALYZE eco_outbox.events")

    sql = queries(OUTBOX_NAMES)
    status = await plan(db, sql["events_of_group"].sql, {"group_key": str(uuid.uuid4()), "limit": 501})
    assert "events_group_idx" in status and "events_delivered_group_idx" in status, status
    assert "Seq Scan" not in status, status

    stats = await plan(db, sql["stats"].sql, {})
    assert "events_due_idx" in stats and "events_dead_idx" in stats, stats
    assert "Seq Scan" not in stats, stats


async def test_the_release_reads_one_group_through_a_kind_free_index(db: aiopg.Pool) -> None:
    """No index of the outbox names a kind (earlier releases' partial ones are dropped: docs/deploys.md):
    the relay's release still reads only the group's rows."""
    await many_retained(db)
    await fetch(db, "ANALYZE eco_outbox.events")
    params = {
        "child_kinds": ["signal"],
        "parent_kinds": ["interaction"],
        "group_keys": [str(uuid.uuid4())],
        "parent_missing": "parent_missing",
    }
    release = await plan(db, queries(OUTBOX_NAMES)["release_waiting"].sql, params)
    assert "events_group_idx" in release and "Seq Scan" not in release, release


async def test_status_answer_is_bounded(client: Any, db: aiopg.Pool) -> None:
    many, few = str(uuid.uuid4()), str(uuid.uuid4())
    await retain(db, STATUS_MAX_ROWS + 3, interaction_id=many)
    await retain(db, 3, interaction_id=few)

    resp = await client.get(f"/api/interactions/{many}/signals")
    assert resp.status == 200
    body = await resp.json()
    assert len(body["signals"]) == STATUS_MAX_ROWS and body["truncated"] is True

    body = await (await client.get(f"/api/interactions/{few}/signals")).json()
    assert len(body["signals"]) == 3 and body["truncated"] is False


async def test_status_is_rate_limited_per_client(make_client: Callable[..., Any]) -> None:
    client = await make_client(rate_limit_per_s=1.0, rate_limit_burst=2.0)
    path = f"/api/interactions/{uuid.uuid4()}/signals"
    statuses = [(await client.get(path)).status for _ in range(3)]
    assert statuses == [404, 404, 429]
    limited = await client.get(path)
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await limited.json())["error"] == "rate_limited"


async def test_every_read_of_the_log_goes_through_one_of_its_indexes(db: aiopg.Pool) -> None:
    """Each index of the log of delivered rows serves a statement, and no statement scans the log: intake's
    dedupe (the primary key, the dedupe key index), the relay's parent checks and the alias rows (the primary
    key), the purge (delivered_at); the status read is above."""
    await many_retained(db)
    await fetch(db, "ANALYZE eco_outbox.events")
    sql = queries(OUTBOX_NAMES)
    # One group commit's rows (a few dozen under load); many more against a small log, and hashing the log
    # is cheaper than probing it, as the planner finds.
    keys = [str(uuid.uuid4()) for _ in range(50)]
    intake = await plan(
        db,
        sql["insert_events"].sql,
        dict(
            kinds=["signal"] * len(keys),
            keys=keys,
            group_keys=keys,
            payloads=["{}"] * len(keys),
            dedupe_keys=[f"d:{n}" for n in range(len(keys))],
        ),
    )
    assert "events_delivered_pkey" in intake and "events_delivered_dedupe_key_idx" in intake, intake
    existing = await plan(db, sql["existing_events"].sql, dict(kinds=["signal"] * len(keys), keys=keys))
    parents = await plan(db, sql["parent_states"].sql, dict(parent_kinds=["interaction"], group_keys=keys))
    release = await plan(
        db,
        sql["release_waiting"].sql,
        dict(child_kinds=["signal"], parent_kinds=["interaction"], group_keys=keys, parent_missing="p"),
    )
    regroup = await plan(db, sql["regroup"].sql, dict(alias_kind="link", aliases=keys[:5]))
    purge = await plan(db, sql["purge_delivered_log"].sql, dict(retention_s=60, limit=1000))
    assert "events_delivered_at_idx" in purge, purge
    for read in (existing, parents, release, regroup):
        assert "events_delivered_pkey" in read, read
    for read in (intake, existing, parents, release, regroup, purge):
        assert "Seq Scan" not in read, read
