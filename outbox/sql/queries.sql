-- Every statement the engine runs on its outbox table, one named section each (outbox.sql loads them).
-- Plain PostgreSQL with psycopg2 parameters (%(name)s); {schema}, {table} and {channel} are the names the
-- engine is given (outbox.names), checked and put in once, when the file is loaded. Kinds are parameters,
-- never spelled here: the engine knows no target.

-- name: insert_events
-- Intake (outbox.enqueue). Arrays in, one statement, one round trip; the NOTIFY rides in the same implicit
-- transaction, so the relay is woken only once the rows are visible. ON CONFLICT makes a repeated key (a
-- client retrying an idempotency key, or a repeated dedupe key) a no-op the caller sees as not inserted; the
-- log of delivered rows does the same for keys already delivered, with inserted_again after it for a key
-- whose delivery committed while this statement ran. The rows take their seq in the order they were sent
-- (ORDER BY the array position): the anti-joins may be planned as hash joins that hand them out in hash
-- order, and the relay claims by seq.
WITH inserted AS (
    INSERT INTO {schema}.{table} (kind, key, group_key, payload, dedupe_key)
    SELECT r.kind, r.key, r.group_key, r.payload, r.dedupe_key
    FROM unnest(CAST(%(kinds)s AS text[]), CAST(%(keys)s AS uuid[]), CAST(%(group_keys)s AS uuid[]),
                CAST(%(payloads)s AS jsonb[]), CAST(%(dedupe_keys)s AS text[])) WITH ORDINALITY
        AS r(kind, key, group_key, payload, dedupe_key, position)
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.{table}_delivered AS d WHERE d.key = r.key AND d.kind = r.kind)
      AND NOT EXISTS (SELECT 1 FROM {schema}.{table}_delivered AS d WHERE d.dedupe_key = r.dedupe_key)
    ORDER BY r.position
    ON CONFLICT DO NOTHING
    RETURNING kind, key
), wake AS (
    SELECT pg_notify('{channel}', '') FROM (SELECT 1 FROM inserted LIMIT 1) AS any_row
)
SELECT kind, key::text FROM inserted LEFT JOIN wake ON true;

-- name: inserted_again
-- Run after insert_events in the same implicit transaction, on a new snapshot: a key whose row a relay moved
-- to the log while insert_events ran (it waited on the row being deleted, or found it deleted after its own
-- snapshot, and inserted it again; docs/design.md) is in the log by now. Those rows are taken out before
-- they commit; the rest are what the caller inserted (its own rows: xmin is this transaction).
WITH mine AS (
    SELECT e.seq, e.kind, e.key, e.dedupe_key FROM {schema}.{table} AS e
    JOIN unnest(CAST(%(kinds)s AS text[]), CAST(%(keys)s AS uuid[])) AS k(kind, key)
        ON e.kind = k.kind AND e.key = k.key
    WHERE e.xmin = pg_current_xact_id_if_assigned()::xid
), again AS (
    DELETE FROM {schema}.{table} AS e USING mine
    WHERE e.seq = mine.seq
      AND (EXISTS (SELECT 1 FROM {schema}.{table}_delivered AS d WHERE d.key = mine.key AND d.kind = mine.kind)
           OR EXISTS (SELECT 1 FROM {schema}.{table}_delivered AS d WHERE d.dedupe_key = mine.dedupe_key))
    RETURNING e.seq
)
SELECT kind, key::text FROM mine WHERE seq NOT IN (SELECT seq FROM again);

-- name: existing_events
-- Rows a first try committed: still in the table, or delivered since.
SELECT e.kind, e.key::text FROM {schema}.{table} AS e
JOIN unnest(CAST(%(kinds)s AS text[]), CAST(%(keys)s AS uuid[])) AS k(kind, key)
    ON e.kind = k.kind AND e.key = k.key
UNION
SELECT d.kind, d.key::text FROM {schema}.{table}_delivered AS d
JOIN unnest(CAST(%(kinds)s AS text[]), CAST(%(keys)s AS uuid[])) AS k(kind, key)
    ON d.kind = k.kind AND d.key = k.key;

-- name: claim
-- The relay (outbox.relay). It claims only the kinds its target delivers: a newer release beside it may
-- write kinds it does not know, and those are that release's relays' to deliver; another kind only once no
-- release took it within the max age. Keys as text, not uuid.UUID (aiopg registers psycopg2's UUID
-- adapter): keys are compared as strings. The row's age is on the database's clock, the one that wrote
-- created_at: a host clock that runs ahead would age every row by its error.
SELECT seq, kind, key::text, group_key::text, payload::text, attempts,
       extract(epoch FROM now() - created_at)::float8
FROM {schema}.{table}
WHERE state = 'pending' AND next_attempt_at <= now()
  AND (kind = ANY(%(kinds)s) OR created_at <= now() - %(unknown_after)s)
ORDER BY next_attempt_at, seq
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: renew_claim
-- A statement that does nothing but end the claim's idle time (see Relay._claim_renewed).
SELECT 1;

-- name: seconds_until_due
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM {schema}.{table}
WHERE state = 'pending' AND kind = ANY(%(kinds)s);

-- name: move_delivered
-- Delivered rows leave the table in the statement that marks them: a DELETE writes no index entry, where an
-- UPDATE of state wrote one into each index of the table. The log keeps what the dedupe, the parent checks,
-- the status read and the retention need: of the payload, only the paths the target's status shows (flat,
-- by dotted path), or the whole payload of an alias row (the regroup merges it). A key delivered again (the
-- intake race in docs/design.md) keeps its first entry.
WITH gone AS (
    DELETE FROM {schema}.{table} WHERE seq = ANY(%(seqs)s)
    RETURNING key, kind, group_key, seq, dedupe_key, attempts, created_at, payload
)
INSERT INTO {schema}.{table}_delivered
    (key, kind, group_key, seq, dedupe_key, attempts, created_at, delivered_at, summary)
SELECT g.key, g.kind, g.group_key, g.seq, g.dedupe_key, g.attempts + 1, g.created_at, now(),
       CASE WHEN g.kind = %(alias_kind)s THEN g.payload ELSE (
           SELECT jsonb_object_agg(f.path, g.payload #> string_to_array(f.path, '.'))
           FROM unnest(CAST(%(shown_kinds)s AS text[]), CAST(%(shown_paths)s AS text[])) AS f(kind, path)
           WHERE f.kind = g.kind AND g.payload #> string_to_array(f.path, '.') IS NOT NULL
       ) END
FROM gone AS g
ON CONFLICT DO NOTHING;

-- name: mark_held
UPDATE {schema}.{table} AS e
SET attempts = e.attempts + d.charge,
    state = d.state,
    next_attempt_at = now() + d.delay_ms * interval '1 millisecond',
    dead_at = CASE WHEN d.state = 'dead' THEN now() END,
    last_error = d.error
FROM unnest(CAST(%(seqs)s AS bigint[]), CAST(%(charges)s AS int[]), CAST(%(states)s AS text[]),
            CAST(%(delays_ms)s AS float8[]), CAST(%(errors)s AS text[]))
    AS d(seq, charge, state, delay_ms, error)
WHERE e.seq = d.seq;

-- name: release_waiting
-- Children of these groups that wait (in backoff, or held for a pending parent) become due now, and those
-- that died waiting (an outage spent their age) live again, once a parent of their group is delivered. Rows
-- another relay holds are skipped, not waited for (their committed version is due): see Relay._release.
UPDATE {schema}.{table} AS child SET next_attempt_at = now(), state = 'pending', dead_at = NULL
WHERE child.kind = ANY(%(child_kinds)s) AND child.group_key = ANY(CAST(%(group_keys)s AS uuid[]))
  AND ((child.state = 'pending' AND child.next_attempt_at > now())
       OR (child.state = 'dead' AND child.last_error = %(parent_missing)s))
  AND (EXISTS (
      SELECT 1 FROM {schema}.{table}_delivered AS parent
      WHERE parent.key = child.group_key AND parent.kind = ANY(%(parent_kinds)s)
  ) OR EXISTS (
      -- marked by a previous release, which updates rather than moves
      SELECT 1 FROM {schema}.{table} AS parent
      WHERE parent.kind = ANY(%(parent_kinds)s) AND parent.key = child.group_key AND parent.state = 'delivered'
  ));

-- name: parent_states
-- Where the outbox has the parents of children that missed them: pending (on their way), or delivered by a
-- concurrent batch after this one looked in the target.
SELECT key::text, bool_or(pending) FROM (
    SELECT key, state = 'pending' AS pending FROM {schema}.{table}
    WHERE kind = ANY(%(parent_kinds)s) AND state <> 'dead' AND key = ANY(CAST(%(group_keys)s AS uuid[]))
    UNION ALL
    SELECT key, false FROM {schema}.{table}_delivered
    WHERE key = ANY(CAST(%(group_keys)s AS uuid[])) AND kind = ANY(%(parent_kinds)s)
) AS parents
GROUP BY key;

-- name: regroup
-- Aliases (outbox.aliases): the rows filed under these aliases move to the groups their alias rows name, due
-- now, with a fresh count of attempts (the waiting was for the alias, not for the parent); dead ones live
-- again. Rows a relay holds right now are waited for, then moved. The relay is woken (as by an insert) when
-- rows moved: they are due now, not at their backoff.
WITH moved AS (
    UPDATE {schema}.{table} AS e
    SET group_key = a.group_key, payload = e.payload || a.payload, state = 'pending', attempts = 0,
        next_attempt_at = now(), dead_at = NULL, last_error = NULL
    FROM (
        SELECT key, group_key, payload FROM {schema}.{table} WHERE kind = %(alias_kind)s
        UNION ALL
        SELECT key, group_key, summary FROM {schema}.{table}_delivered WHERE kind = %(alias_kind)s
    ) AS a
    WHERE a.key = e.group_key AND e.kind <> %(alias_kind)s AND e.state <> 'delivered'
      AND a.key = ANY(CAST(%(aliases)s AS uuid[]))
    RETURNING e.seq
), wake AS (
    SELECT pg_notify('{channel}', '') FROM (SELECT 1 FROM moved LIMIT 1) AS any_row
)
SELECT seq FROM moved LEFT JOIN wake ON true;

-- name: regroup_seqs
-- The same move, in the relay's claim transaction, for the claimed rows in seqs.
UPDATE {schema}.{table} AS e
SET group_key = a.group_key, payload = e.payload || a.payload, state = 'pending', attempts = 0,
    next_attempt_at = now(), dead_at = NULL, last_error = NULL
FROM (
    SELECT key, group_key, payload FROM {schema}.{table} WHERE kind = %(alias_kind)s
    UNION ALL
    SELECT key, group_key, summary FROM {schema}.{table}_delivered WHERE kind = %(alias_kind)s
) AS a
WHERE a.key = e.group_key AND e.kind <> %(alias_kind)s AND e.state <> 'delivered'
  AND e.seq = ANY(CAST(%(seqs)s AS bigint[]))
RETURNING e.seq;

-- name: purge_delivered
-- Retention (outbox.retention) of the rows a previous release marked delivered in place. SKIP LOCKED: a row a
-- relay is marking right now is left for the next round.
DELETE FROM {schema}.{table} WHERE seq IN (
    SELECT seq FROM {schema}.{table}
    WHERE state = 'delivered' AND delivered_at < now() - %(retention_s)s * interval '1 second'
    ORDER BY delivered_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: purge_delivered_log
-- Retention of the log of delivered rows, oldest first through events_delivered_at_idx.
DELETE FROM {schema}.{table}_delivered WHERE (key, kind) IN (
    SELECT key, kind FROM {schema}.{table}_delivered
    WHERE delivered_at < now() - %(retention_s)s * interval '1 second'
    ORDER BY delivered_at
    LIMIT %(limit)s
);

-- name: purge_dead_batch
-- Dead rows after their own retention, oldest first through events_dead_idx (dead_at, seq).
DELETE FROM {schema}.{table} WHERE seq IN (
    SELECT seq FROM {schema}.{table}
    WHERE state = 'dead' AND dead_at < now() - %(retention_s)s * interval '1 second'
    ORDER BY dead_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: purge_dead
-- Operators (outbox.admin): the explicit end of a dead letter.
DELETE FROM {schema}.{table}
WHERE state = 'dead' AND dead_at < now() - %(older_than_s)s * interval '1 second'
RETURNING seq;

-- name: stats
-- One branch per state, each read through its own partial index (events_due_idx, events_dead_idx), so a
-- scrape costs the pending and dead rows only; `state IN (...)` can use neither and scans every retained row.
SELECT kind, state, rows, oldest_age_s FROM (
    SELECT kind, 'pending' AS state, count(*) AS rows,
           extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_s
    FROM {schema}.{table} WHERE state = 'pending' GROUP BY kind
    UNION ALL
    SELECT kind, 'dead' AS state, count(*) AS rows,
           extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_s
    FROM {schema}.{table} WHERE state = 'dead' GROUP BY kind
) AS by_state
ORDER BY kind, state;

-- name: list_dead
SELECT seq, kind, key::text, group_key::text, attempts, created_at, dead_at, last_error, payload
FROM {schema}.{table}
WHERE state = 'dead' AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s;

-- name: requeue_all
UPDATE {schema}.{table}
SET state = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL, last_error = NULL
WHERE state = 'dead'
RETURNING seq;

-- name: requeue_seqs
UPDATE {schema}.{table}
SET state = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL, last_error = NULL
WHERE state = 'dead' AND seq = ANY(%(seqs)s)
RETURNING seq;

-- name: notify
SELECT pg_notify('{channel}', '');

-- name: listen
-- The relay's wake-up (outbox.wakeup), on a connection of its own.
LISTEN {channel};

-- name: events_of_group
-- Status (outbox.status): one group's rows, oldest first, from the table and from the log of delivered
-- rows, each through its group index, bounded so that it costs one group's rows whatever the outbox retains.
-- A logged row carries its summary (flat, by dotted path) for its payload.
SELECT kind, key::text, payload, state, attempts, created_at, delivered_at, dead_at, last_error, summarized
FROM (
    (SELECT seq, kind, key, payload, state, attempts, created_at, delivered_at, dead_at, last_error,
            false AS summarized
     FROM {schema}.{table}
     WHERE group_key = CAST(%(group_key)s AS uuid)
     ORDER BY seq
     LIMIT %(limit)s)
    UNION ALL
    (SELECT seq, kind, key, coalesce(summary, '{}'::jsonb), 'delivered', attempts, created_at, delivered_at,
            NULL::timestamptz, NULL::text, true
     FROM {schema}.{table}_delivered
     WHERE group_key = CAST(%(group_key)s AS uuid)
     ORDER BY seq
     LIMIT %(limit)s)
) AS group_rows
ORDER BY seq
LIMIT %(limit)s;
