"""Every statement the engine runs on its outbox table, in one place, compiled once at import.

SQLAlchemy Core where the statement is a plain select or update of the table (it reads as Python and checks
the column names); `text()` where the statement leans on PostgreSQL (CTEs, unnest, jsonb, ON CONFLICT) and
reads better as SQL. Either way the caller gets a `Compiled`: the SQL string and its default parameters.
Kinds are parameters, never spelled here: the engine knows no target.
"""

from __future__ import annotations

from sqlalchemy import (
    Float,
    Integer,
    Interval,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)

from outbox.sqlutil import compile_statement
from outbox.tables import CHANNEL, DEAD, DELIVERED, PENDING, events

# Intake (outbox.enqueue). Arrays in, one statement, one round trip; the NOTIFY rides in the same implicit
# transaction, so the relay is woken only once the rows are visible. ON CONFLICT makes a repeated key (a
# client retrying an idempotency key, or a repeated dedupe key) a no-op the caller sees as `inserted=False`.
INSERT_EVENTS = compile_statement(
    text(f"""
WITH inserted AS (
    INSERT INTO eco_outbox.events (kind, key, group_key, payload, dedupe_key)
    SELECT * FROM unnest(CAST(:kinds AS text[]), CAST(:keys AS uuid[]), CAST(:group_keys AS uuid[]),
                         CAST(:payloads AS jsonb[]), CAST(:dedupe_keys AS text[]))
    ON CONFLICT DO NOTHING
    RETURNING kind, key
), wake AS (
    SELECT pg_notify('{CHANNEL}', '') FROM (SELECT 1 FROM inserted LIMIT 1) AS any_row
)
SELECT kind, key::text FROM inserted LEFT JOIN wake ON true
""")
)

EXISTING_EVENTS = compile_statement(
    text("""
SELECT e.kind, e.key::text FROM eco_outbox.events AS e
JOIN unnest(CAST(:kinds AS text[]), CAST(:keys AS uuid[])) AS k(kind, key)
    ON e.kind = k.kind AND e.key = k.key
""")
)

# The relay (outbox.relay). It claims only the kinds its target delivers: a newer release beside it may write
# kinds it does not know, and those are that release's relays' to deliver.
CLAIM = compile_statement(
    select(
        events.c.seq,
        events.c.kind,
        # Text, not uuid.UUID (aiopg registers psycopg2's UUID adapter): keys are compared as strings.
        cast(events.c.key, Text),
        cast(events.c.group_key, Text),
        cast(events.c.payload, Text),
        events.c.attempts,
        # The row's age on the database's clock, the one that wrote created_at: a host clock that runs ahead
        # would age every row by its error.
        func.extract("epoch", func.now() - events.c.created_at).cast(Float),
    )
    .where(
        events.c.state == PENDING,
        events.c.next_attempt_at <= func.now(),
        # The kinds this release delivers; another kind only once no release took it within the max age.
        or_(
            events.c.kind == func.any(bindparam("kinds")),
            events.c.created_at <= func.now() - bindparam("unknown_after", type_=Interval),
        ),
    )
    .order_by(events.c.next_attempt_at, events.c.seq)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)

# A statement that does nothing but end the claim's idle time (see Relay._claim_renewed).
RENEW_CLAIM = compile_statement(text("SELECT 1"))

SECONDS_UNTIL_DUE = compile_statement(
    select(func.extract("epoch", func.min(events.c.next_attempt_at) - func.now()).cast(Float)).where(
        events.c.state == PENDING, events.c.kind == func.any(bindparam("kinds"))
    )
)

MARK_DELIVERED = compile_statement(
    update(events)
    .values(state=DELIVERED, delivered_at=func.now(), attempts=events.c.attempts + 1, last_error=None)
    .where(events.c.seq == func.any(bindparam("seqs")))
)

MARK_HELD = compile_statement(
    text(f"""
UPDATE eco_outbox.events AS e
SET attempts = e.attempts + d.charge,
    state = d.state,
    next_attempt_at = now() + d.delay_ms * interval '1 millisecond',
    dead_at = CASE WHEN d.state = '{DEAD}' THEN now() END,
    last_error = d.error
FROM unnest(CAST(:seqs AS bigint[]), CAST(:charges AS int[]), CAST(:states AS text[]),
            CAST(:delays_ms AS float8[]), CAST(:errors AS text[]))
    AS d(seq, charge, state, delay_ms, error)
WHERE e.seq = d.seq
""")
)

# Children of these groups that wait (in backoff, or held for a pending parent) become due now, and those that
# died waiting (an outage spent their age) live again, once a parent of their group is delivered. Rows another
# relay holds are skipped, not waited for (their committed version is due): see Relay._release.
RELEASE_WAITING = compile_statement(
    text(f"""
UPDATE eco_outbox.events AS child SET next_attempt_at = now(), state = '{PENDING}', dead_at = NULL
WHERE child.kind = ANY(:child_kinds) AND child.group_key = ANY(CAST(:group_keys AS uuid[]))
  AND ((child.state = '{PENDING}' AND child.next_attempt_at > now())
       OR (child.state = '{DEAD}' AND child.last_error = :parent_missing))
  AND EXISTS (
      SELECT 1 FROM eco_outbox.events AS parent
      WHERE parent.kind = ANY(:parent_kinds) AND parent.key = child.group_key AND parent.state = '{DELIVERED}'
  )
""")
)

# Where the outbox has the parents of children that missed them: pending (on their way), or delivered by a
# concurrent batch after this one looked in the target.
PARENT_STATES = compile_statement(
    text(f"""
SELECT key::text, bool_or(state = '{PENDING}') FROM eco_outbox.events
WHERE kind = ANY(:parent_kinds) AND state <> '{DEAD}' AND key = ANY(CAST(:group_keys AS uuid[]))
GROUP BY key
""")
)

# Retention (outbox.retention). SKIP LOCKED: a row a relay is marking right now is left for the next round.
PURGE_DELIVERED = compile_statement(
    text(f"""
DELETE FROM eco_outbox.events WHERE seq IN (
    SELECT seq FROM eco_outbox.events
    WHERE state = '{DELIVERED}' AND delivered_at < now() - :retention_s * interval '1 second'
    ORDER BY delivered_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
""")
)

# Dead rows after their own retention, oldest first through events_dead_idx (dead_at, seq).
PURGE_DEAD_BATCH = compile_statement(
    text(f"""
DELETE FROM eco_outbox.events WHERE seq IN (
    SELECT seq FROM eco_outbox.events
    WHERE state = '{DEAD}' AND dead_at < now() - :retention_s * interval '1 second'
    ORDER BY dead_at, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
""")
)

PURGE_DEAD = compile_statement(
    text(f"""
DELETE FROM eco_outbox.events
WHERE state = '{DEAD}' AND dead_at < now() - :older_than_s * interval '1 second'
RETURNING seq
""")
)


# Operators (outbox.admin).
def _stats_of(state: str) -> Select:
    return (
        select(
            events.c.kind,
            literal(state).label("state"),
            func.count().label("rows"),
            func.extract("epoch", func.now() - func.min(events.c.created_at))
            .cast(Float)
            .label("oldest_age_s"),
        )
        .where(events.c.state == state)
        .group_by(events.c.kind)
    )


# One branch per state, each read through its own partial index (events_due_idx, events_dead_idx), so a
# scrape costs the pending and dead rows only; `state IN (...)` can use neither and scans every retained row.
_stats = union_all(_stats_of(PENDING), _stats_of(DEAD)).subquery()
STATS = compile_statement(select(_stats).order_by(_stats.c.kind, _stats.c.state))

LIST_DEAD = compile_statement(
    select(
        events.c.seq,
        events.c.kind,
        cast(events.c.key, Text),
        cast(events.c.group_key, Text),
        events.c.attempts,
        events.c.created_at,
        events.c.dead_at,
        events.c.last_error,
        events.c.payload,
    )
    .where(events.c.state == DEAD, events.c.seq > bindparam("after_seq", type_=Integer))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)

_requeue = (
    update(events)
    .values(state=PENDING, attempts=0, next_attempt_at=func.now(), dead_at=None, last_error=None)
    .returning(events.c.seq)
)
REQUEUE_ALL = compile_statement(_requeue.where(events.c.state == DEAD))
REQUEUE_SEQS = compile_statement(
    _requeue.where(and_(events.c.state == DEAD, events.c.seq == func.any(bindparam("seqs"))))
)
NOTIFY = compile_statement(select(func.pg_notify(literal_column(f"'{CHANNEL}'"), "")))

# Status (outbox.status): one group's rows, oldest first, through events_group_idx (sql/006, sql/008), bounded
# so that it costs one group's rows whatever the outbox retains.
EVENTS_OF_GROUP = compile_statement(
    select(
        events.c.kind,
        cast(events.c.key, Text),
        events.c.payload,
        events.c.state,
        events.c.attempts,
        events.c.created_at,
        events.c.delivered_at,
        events.c.dead_at,
        events.c.last_error,
    )
    .where(events.c.group_key == bindparam("group_key"))
    .order_by(events.c.seq)
    .limit(bindparam("limit"))
)
