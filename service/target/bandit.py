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

from service.target.queries import TARGET_QUERIES

# The ECO backend's rewards and its default pillar.
REWARDS = {"up": 1.0, "down": -1.0}
DEFAULT_ARM = "baseline"
DEFAULT_PILLAR = "default"
# update_bandit_arm's rule: a reward this high is a success (alpha), anything lower a failure (beta).
SUCCESS_AT = 0.5


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
    await cur.execute(
        TARGET_QUERIES["insert_feedback"].sql,
        {"rows": rows_json, "default_arm": DEFAULT_ARM, "default_pillar": DEFAULT_PILLAR},
    )
    written = {row[0] for row in await cur.fetchall()}
    if written:
        await _reward(cur, sorted(written))
    return written


async def _reward(cur: Cursor, ids: list[str]) -> None:
    await cur.execute(
        TARGET_QUERIES["insert_first_rewards"].sql,
        {
            "ids": ids,
            "default_pillar": DEFAULT_PILLAR,
            "reward_up": REWARDS["up"],
            "reward_down": REWARDS["down"],
        },
    )
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
            TARGET_QUERIES["count_arms"].sql,
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
        TARGET_QUERIES["lock_rewards"].sql,
        {"response_ids": [vote["response_id"] for vote in later], "arms": [vote["arm"] for vote in later]},
    )
    held: dict[tuple[str, str], Decimal] = {
        (response_id, arm): reward for response_id, arm, reward in await cur.fetchall()
    }
    await cur.execute(TARGET_QUERIES["update_rewards"].sql, {"votes": json.dumps(later)})
    taking = {(vote["response_id"], vote["arm"]): vote["recompensa"] for vote in later}
    for response_id, arm in await cur.fetchall():
        moves[arm].add(float(held[(response_id, arm)]), -1)
        moves[arm].add(taking[(response_id, arm)])
