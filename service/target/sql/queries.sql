-- Every statement the ECO target's deliverers run (service.target), one named section each, loaded by
-- outbox.sql. The interaction's columns are those of InteractionRow (service/target/rows.py); a test holds
-- the two equal.

-- name: insert_interactions
INSERT INTO analytics.eco_interactions (
    id, created_at, user_id, session_id, message_id, prompt_hash, module_combo, tokens_in, tokens_out,
    latency_ms, meta)
SELECT id, created_at, user_id, session_id, message_id, prompt_hash, module_combo, tokens_in, tokens_out,
       latency_ms, coalesce(meta, '{}'::jsonb)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    id uuid, created_at timestamptz, user_id uuid, session_id text, message_id text, prompt_hash text,
    module_combo text[], tokens_in int, tokens_out int, latency_ms int, meta jsonb)
ON CONFLICT DO NOTHING
RETURNING id::text;

-- name: existing_interactions
-- Run as a statement of its own: see deliver_interactions.
SELECT id::text FROM analytics.eco_interactions WHERE id = ANY(CAST(%(ids)s AS uuid[]));

-- name: upsert_completions
-- A completion may reach the target before its creation (another relay holds that row): it then inserts the
-- whole row, and the creation's DO NOTHING keeps it.
INSERT INTO analytics.eco_interactions (
    id, created_at, user_id, session_id, message_id, prompt_hash, module_combo, tokens_in, tokens_out,
    latency_ms, meta)
SELECT id, created_at, user_id, session_id, message_id, prompt_hash, module_combo, tokens_in, tokens_out,
       latency_ms, coalesce(meta, '{}'::jsonb)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    id uuid, created_at timestamptz, user_id uuid, session_id text, message_id text, prompt_hash text,
    module_combo text[], tokens_in int, tokens_out int, latency_ms int, meta jsonb)
ON CONFLICT (id) DO UPDATE SET
    tokens_in = excluded.tokens_in,
    tokens_out = excluded.tokens_out,
    latency_ms = excluded.latency_ms,
    meta = analytics.eco_interactions.meta || excluded.meta
RETURNING id::text;

-- name: insert_signals
-- A child row is written only once its interaction exists; the rest wait in the outbox. Those written
-- before (a re-delivery) count as delivered too.
WITH ready AS MATERIALIZED (
    SELECT r.* FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS r(id uuid, created_at timestamptz, interaction_id uuid, signal text, meta jsonb)
    WHERE EXISTS (SELECT 1 FROM analytics.eco_interactions i WHERE i.id = r.interaction_id)
), inserted AS (
    INSERT INTO analytics.eco_passive_signals (id, created_at, interaction_id, signal, meta)
    SELECT id, created_at, interaction_id, signal, coalesce(meta, '{}'::jsonb) FROM ready
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id::text FROM ready;

-- name: insert_module_usages
-- As signals; keyed by (interaction, module, position), and not written when the table has that usage
-- already (one posted under the app's local reply id and again under the interaction's id; another
-- writer's).
WITH ready AS MATERIALIZED (
    SELECT r.* FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS r(id uuid, created_at timestamptz, interaction_id uuid, module_key text, tokens int, position int)
    WHERE EXISTS (SELECT 1 FROM analytics.eco_interactions i WHERE i.id = r.interaction_id)
), inserted AS (
    INSERT INTO analytics.eco_module_usages (id, created_at, interaction_id, module_key, tokens, position)
    SELECT id, created_at, interaction_id, module_key, tokens, position FROM ready
    WHERE NOT (EXISTS (
        SELECT 1 FROM analytics.eco_module_usages m
        WHERE m.interaction_id = ready.interaction_id AND m.module_key = ready.module_key
          AND m.position IS NOT DISTINCT FROM ready.position))
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id::text FROM ready;

-- name: insert_feedback
-- The votes whose interaction is in the target, with what the ECO backend copied from it (prompt hash,
-- user, session) and the arm: the body's, else the interaction's first module by position, else the
-- default arm.
WITH ready AS MATERIALIZED (
    SELECT r.*, i.user_id AS i_user_id, i.session_id AS i_session_id, i.prompt_hash,
           i.message_id AS i_message_id
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        id uuid, interaction_id uuid, vote text, reason text[], source text, meta jsonb, message_id text,
        arm text, pillar text, user_id uuid, session_id text, voted_at timestamptz)
    JOIN analytics.eco_interactions AS i ON i.id = r.interaction_id
), inserted AS (
    INSERT INTO analytics.eco_feedback (
        id, interaction_id, user_id, session_id, vote, reason, source, meta, created_at, message_id, arm,
        pillar, prompt_hash, "timestamp")
    SELECT v.id, v.interaction_id, coalesce(v.i_user_id, v.user_id), coalesce(v.i_session_id, v.session_id),
           v.vote::analytics.eco_feedback_vote, v.reason, v.source, coalesce(v.meta, '{}'::jsonb),
           v.voted_at,
           coalesce(v.message_id, v.i_message_id, v.interaction_id::text),
           coalesce(v.arm, (
               SELECT m.module_key FROM analytics.eco_module_usages AS m
               WHERE m.interaction_id = v.interaction_id
               ORDER BY m.position NULLS LAST, m.created_at LIMIT 1
           ), %(default_arm)s),
           coalesce(v.pillar, %(default_pillar)s), v.prompt_hash, v.voted_at
    FROM ready AS v
    ON CONFLICT (id) DO NOTHING
)
SELECT id::text FROM ready;

-- name: insert_first_rewards
-- The batch's votes as stored (a re-delivery reads the arm it stored the first time), the latest of each
-- (response, arm); the first reward of a (response, arm) is inserted, the others come back for a compare.
-- A new statement: it sees the feedback rows written above, and reward rows other relays committed.
WITH votes AS (
    SELECT DISTINCT ON (f.interaction_id, f.arm)
        f.id, f.interaction_id::text AS response_id, f.interaction_id, coalesce(f.pillar, %(default_pillar)s)
        AS pilar, f.arm, CASE f.vote WHEN 'up' THEN %(reward_up)s ELSE %(reward_down)s END AS recompensa,
        coalesce(f."timestamp", f.created_at) AS voted_at
    FROM analytics.eco_feedback AS f
    WHERE f.id = ANY(%(ids)s::uuid[])
    ORDER BY f.interaction_id, f.arm, coalesce(f."timestamp", f.created_at) DESC, f.id DESC
), inserted AS (
    INSERT INTO analytics.bandit_rewards (id, response_id, interaction_id, pilar, arm, recompensa, created_at)
    SELECT id, response_id, interaction_id, pilar, arm, recompensa, voted_at FROM votes
    ORDER BY response_id, arm
    ON CONFLICT DO NOTHING
    RETURNING response_id, arm
)
SELECT v.id::text, v.response_id, v.interaction_id::text, v.pilar, v.arm, v.recompensa, v.voted_at,
       i.arm IS NOT NULL
FROM votes AS v LEFT JOIN inserted AS i USING (response_id, arm);

-- name: lock_rewards
-- The reward rows that were there already, locked, in one order: each holds its vote until this
-- transaction ends, so the compare below sees the latest committed one.
SELECT b.response_id, b.arm, b.recompensa
FROM analytics.bandit_rewards AS b
JOIN unnest(%(response_ids)s::text[], %(arms)s::text[]) AS k(response_id, arm) USING (response_id, arm)
ORDER BY b.response_id, b.arm
FOR UPDATE OF b;

-- name: update_rewards
-- A vote later than the one a row holds takes its place.
UPDATE analytics.bandit_rewards AS b
SET id = v.id, pilar = v.pilar, recompensa = v.recompensa, created_at = v.voted_at
FROM jsonb_to_recordset(%(votes)s::jsonb)
    AS v(id uuid, response_id text, arm text, pilar text, recompensa numeric, voted_at timestamptz)
WHERE b.response_id = v.response_id AND b.arm = v.arm AND (v.voted_at, v.id) > (b.created_at, b.id)
RETURNING b.response_id, b.arm;

-- name: count_arms
-- Each arm's moves, added at once; a first vote on a new arm inserts it (from update_bandit_arm's start: no
-- pulls, alpha 1, beta 1), and two relays doing so at once both count (ON CONFLICT, not exists-then-insert).
INSERT INTO analytics.eco_bandit_arms AS a (arm_key, pulls, alpha, beta, reward_sum, reward_sq_sum)
SELECT arm_key, pulls, 1 + alpha, 1 + beta, reward_sum, reward_sq_sum
FROM unnest(%(arms)s::text[], %(pulls)s::bigint[], %(alphas)s::float8[], %(betas)s::float8[],
            %(sums)s::float8[], %(sq_sums)s::float8[])
    AS d(arm_key, pulls, alpha, beta, reward_sum, reward_sq_sum)
ORDER BY arm_key
ON CONFLICT (arm_key) DO UPDATE SET
    pulls = a.pulls + excluded.pulls,
    alpha = a.alpha + excluded.alpha - 1,
    beta = a.beta + excluded.beta - 1,
    reward_sum = a.reward_sum + excluded.reward_sum,
    reward_sq_sum = a.reward_sq_sum + excluded.reward_sq_sum,
    last_update = now();

-- name: message_id_held
-- Asked at the door (service.target.message_ids), under the lookup's statement_timeout.
SELECT EXISTS (SELECT 1 FROM analytics.eco_interactions WHERE message_id = %(message_id)s);
