"""Votes into the ECO target: one eco_feedback row per vote, the reward of each (response, arm) in
bandit_rewards, and each reward counted exactly once in eco_bandit_arms.

The reward row of a (response, arm) holds the latest vote: latest by the time the vote was received, then
by its id, compared with the row's own `created_at` and `id` (the vote it holds), so that votes delivered
late, twice, or by two relays at once land as if in order. The arm counts move by what the reward rows
did: a first reward adds a pull, a changed one moves its count (alpha - 1, beta + 1, and the sums), the
same one changes nothing. Every step is a set-based statement; rows are taken in one order everywhere, so
that two relays wait on each other instead of deadlocking.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiopg import Cursor

# The ECO backend's rewards and its default pillar.
REWARDS = {"up": 1.0, "down": -1.0}
DEFAULT_ARM = "baseline"
DEFAULT_PILLAR = "default"
# update_bandit_arm's rule: a reward this high is a success (alpha), anything lower a failure (beta).
SUCCESS_AT = 0.5

# The votes whose interaction is in the target, with what the ECO backend copied from it (prompt hash,
# user, session) and the arm: the body's, else the interaction's first module by position, else baseline.
INSERT_FEEDBACK_SQL = f"""
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
           v.vote::analytics.eco_feedback_vote, v.reason, v.source, coalesce(v.meta, '{{}}'::jsonb),
           v.voted_at,
           coalesce(v.message_id, v.i_message_id, v.interaction_id::text),
           coalesce(v.arm, (
               SELECT m.module_key FROM analytics.eco_module_usages AS m
               WHERE m.interaction_id = v.interaction_id
               ORDER BY m.position NULLS LAST, m.created_at LIMIT 1
           ), '{DEFAULT_ARM}'),
           coalesce(v.pillar, '{DEFAULT_PILLAR}'), v.prompt_hash, v.voted_at
    FROM ready AS v
    ON CONFLICT (id) DO NOTHING
)
SELECT id::text FROM ready
"""

# The batch's votes as stored (a re-delivery reads the arm it stored the first time), the latest of each
# (response, arm); the first reward of a (response, arm) is inserted, the others come back for a compare.
# A new statement: it sees the feedback rows written above, and reward rows other relays committed.
INSERT_FIRST_REWARDS_SQL = f"""
WITH votes AS (
    SELECT DISTINCT ON (f.interaction_id, f.arm)
        f.id, f.interaction_id::text AS response_id, f.interaction_id, coalesce(f.pillar, '{DEFAULT_PILLAR}')
        AS pilar, f.arm, CASE f.vote WHEN 'up' THEN {REWARDS["up"]} ELSE {REWARDS["down"]} END AS recompensa,
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
FROM votes AS v LEFT JOIN inserted AS i USING (response_id, arm)
"""

# The reward rows that were there already, locked, in one order: each holds its vote until this
# transaction ends, so the compare below sees the latest committed one.
LOCK_REWARDS_SQL = """
SELECT b.response_id, b.arm, b.recompensa
FROM analytics.bandit_rewards AS b
JOIN unnest(%(response_ids)s::text[], %(arms)s::text[]) AS k(response_id, arm) USING (response_id, arm)
ORDER BY b.response_id, b.arm
FOR UPDATE OF b
"""

# A vote later than the one a row holds takes its place.
UPDATE_REWARDS_SQL = """
UPDATE analytics.bandit_rewards AS b
SET id = v.id, pilar = v.pilar, recompensa = v.recompensa, created_at = v.voted_at
FROM jsonb_to_recordset(%(votes)s::jsonb)
    AS v(id uuid, response_id text, arm text, pilar text, recompensa numeric, voted_at timestamptz)
WHERE b.response_id = v.response_id AND b.arm = v.arm AND (v.voted_at, v.id) > (b.created_at, b.id)
RETURNING b.response_id, b.arm
"""

# Each arm's moves, added at once; a first vote on a new arm inserts it (from update_bandit_arm's start: no
# pulls, alpha 1, beta 1), and two relays doing so at once both count (ON CONFLICT, not exists-then-insert).
COUNT_ARMS_SQL = """
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
    last_update = now()
"""


@dataclass
class ArmMoves:
    """What the reward rows of a batch did to one arm's counts."""

    pulls: int = 0
    alpha: float = 0.0
    beta: float = 0.0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0

    def add(self, reward: float, sign: int = 1) -> None:
        """Count a reward (sign 1) or take it back (sign -1)."""
        if reward >= SUCCESS_AT:
            self.alpha += sign
        else:
            self.beta += sign
        self.reward_sum += sign * reward
        self.reward_sq_sum += sign * reward * reward

    @property
    def moved(self) -> bool:
        return any((self.pulls, self.alpha, self.beta, self.reward_sum, self.reward_sq_sum))


Moves = defaultdict[str, ArmMoves]


async def deliver_votes(cur: Cursor, rows_json: str) -> set[str]:
    """Write a batch of votes; returns the keys of those whose interaction is in the target."""
    await cur.execute(INSERT_FEEDBACK_SQL, {"rows": rows_json})
    written = {row[0] for row in await cur.fetchall()}
    if written:
        await _reward(cur, sorted(written))
    return written


async def _reward(cur: Cursor, ids: list[str]) -> None:
    await cur.execute(INSERT_FIRST_REWARDS_SQL, {"ids": ids})
    votes = await cur.fetchall()
    moves: Moves = defaultdict(ArmMoves)
    later = []
    for vote_id, response_id, _, pilar, arm, reward, voted_at, first in votes:
        if first:
            moves[arm].pulls += 1
            moves[arm].add(float(reward))
        else:
            later.append(
                {
                    "id": vote_id,
                    "response_id": response_id,
                    "arm": arm,
                    "pilar": pilar,
                    "recompensa": float(reward),
                    "voted_at": voted_at.isoformat(),
                }
            )
    if later:
        await _replace(cur, later, moves)
    moved = {arm: arm_moves for arm, arm_moves in moves.items() if arm_moves.moved}
    if moved:
        arms = sorted(moved)
        await cur.execute(
            COUNT_ARMS_SQL,
            {
                "arms": arms,
                "pulls": [moved[arm].pulls for arm in arms],
                "alphas": [moved[arm].alpha for arm in arms],
                "betas": [moved[arm].beta for arm in arms],
                "sums": [moved[arm].reward_sum for arm in arms],
                "sq_sums": [moved[arm].reward_sq_sum for arm in arms],
            },
        )


async def _replace(cur: Cursor, later: list[dict[str, Any]], moves: Moves) -> None:
    """Votes on a (response, arm) that has a reward: the later one takes its place, and the arm's count
    moves from the reward it held to the new one."""
    await cur.execute(
        LOCK_REWARDS_SQL,
        {"response_ids": [vote["response_id"] for vote in later], "arms": [vote["arm"] for vote in later]},
    )
    held: dict[tuple[str, str], Decimal] = {
        (response_id, arm): reward for response_id, arm, reward in await cur.fetchall()
    }
    await cur.execute(UPDATE_REWARDS_SQL, {"votes": json.dumps(later)})
    taking = {(vote["response_id"], vote["arm"]): vote["recompensa"] for vote in later}
    for response_id, arm in await cur.fetchall():
        moves[arm].add(float(held[(response_id, arm)]), -1)
        moves[arm].add(taking[(response_id, arm)])
