"""The loss checker: what the service promised (202) against what reached the target.

Every signal it posts carries a client `signal_id` and a run stamp in its meta, so each request has a known
id whatever its fate. A request ends one of three ways:
- acknowledged (202): the id must end in `analytics.eco_passive_signals` exactly once, or, when its parent
  interaction never reached the target, be dead-lettered in `eco_outbox.events`; a signal the test expects
  the target to refuse (`expect_refused`) must instead be dead with the refusal's SQLSTATE as its error;
- rejected (an answer other than 202): the id must appear nowhere, neither in the target nor in the outbox;
- unanswered (the connection died with the process): either fate is allowed, but never twice.
And no stamped row in the target may carry an id the checker did not post.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiopg

from tests.helpers import fetch, scalar, wait_for

STAMP_KEY = "loss_checker_run"


@dataclass
class LossReport:
    acknowledged: int
    delivered: int
    dead: int
    rejected: int
    unanswered: int
    refused: int


@dataclass
class LossChecker:
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    acknowledged: dict[str, str] = field(default_factory=dict)  # signal id -> interaction id
    rejected: set[str] = field(default_factory=set)
    unanswered: set[str] = field(default_factory=set)
    expect_refused: set[str] = field(default_factory=set)

    def body(self, interaction_id: str, name: str = "view", **meta: Any) -> dict[str, Any]:
        return {
            "interaction_id": interaction_id,
            "name": name,
            "signal_id": str(uuid.uuid4()),
            "meta": {**meta, STAMP_KEY: self.run},
        }

    async def post(
        self, session: aiohttp.ClientSession, url: str, bodies: list[dict[str, Any]]
    ) -> int | None:
        """POST one signal (or a batch when several bodies); returns the status, or None without answer."""
        payload: Any = bodies if len(bodies) > 1 else bodies[0]
        ids = [body["signal_id"] for body in bodies]
        try:
            async with session.post(f"{url}/api/signal", json=payload) as resp:
                status = resp.status
                answer = await resp.json()
        except (aiohttp.ClientError, ConnectionError):
            self.unanswered.update(ids)
            return None
        if status == 202:
            answered = answer if isinstance(answer, list) else [answer]
            assert [item["id"] for item in answered] == ids, answer
            self.acknowledged.update({body["signal_id"]: body["interaction_id"] for body in bodies})
        else:
            self.rejected.update(ids)
        return status

    @property
    def posted(self) -> list[str]:
        return [*self.acknowledged, *self.rejected, *self.unanswered]

    async def pending(self, outbox: aiopg.Pool) -> int:
        return await scalar(
            outbox,
            "select count(*) from eco_outbox.events where kind = 'signal' and state = 'pending'"
            " and key = any(%s::uuid[])",
            (self.posted,),
        )

    async def wait_settled(self, outbox: aiopg.Pool, timeout_s: float = 30.0) -> None:
        """Until none of the posted signals is pending: each is delivered or dead."""
        await wait_for(
            lambda: self.pending(outbox), lambda count: count == 0, timeout_s=timeout_s, interval_s=0.05
        )

    async def verify(self, outbox: aiopg.Pool, target: aiopg.Pool) -> LossReport:
        posted = self.posted
        in_target: dict[str, int] = {
            key: count
            for key, count in await fetch(
                target,
                "select id::text, count(*) from analytics.eco_passive_signals where id = any(%s::uuid[])"
                " group by id",
                (posted,),
            )
        }
        outbox_rows = {
            key: (state, last_error)
            for key, state, last_error in await fetch(
                outbox,
                "select key::text, state, last_error from eco_outbox.events"
                " where kind = 'signal' and key = any(%s::uuid[])",
                (posted,),
            )
        }
        outbox_state = {key: state for key, (state, _) in outbox_rows.items()}
        parents = {
            row[0]
            for row in await fetch(
                target,
                "select id::text from analytics.eco_interactions where id = any(%s::uuid[])",
                (list(set(self.acknowledged.values())),),
            )
        }
        problems: list[str] = []
        delivered = dead = refused = 0
        for key, parent in self.acknowledged.items():
            count = in_target.get(key, 0)
            if key in self.expect_refused:
                state, error = outbox_rows.get(key, (None, None))
                if count == 0 and state == "dead" and error and error[:5].isalnum() and error[5:7] == ": ":
                    refused += 1
                else:
                    problems.append(f"refused {key}: {count} in target, outbox {state} ({error})")
            elif count == 1 and parent in parents:
                delivered += 1
            elif count == 0 and parent not in parents and outbox_state.get(key) == "dead":
                dead += 1
            else:
                problems.append(
                    f"acknowledged {key}: {count} in target, outbox {outbox_state.get(key)},"
                    f" parent {'present' if parent in parents else 'absent'}"
                )
        for key in self.rejected:
            if key in in_target or key in outbox_state:
                problems.append(
                    f"rejected {key} appears (target {in_target.get(key, 0)}, outbox {outbox_state.get(key)})"
                )
        for key in self.unanswered:
            if in_target.get(key, 0) > 1:
                problems.append(f"unanswered {key} stored {in_target[key]} times")
        strays = await fetch(
            target,
            "select id::text from analytics.eco_passive_signals"
            " where meta ->> %s = %s and not (id = any(%s::uuid[]))",
            (STAMP_KEY, self.run, [*self.acknowledged, *self.unanswered]),
        )
        problems.extend(f"stored but never acknowledged: {row[0]}" for row in strays)
        assert not problems, f"{len(problems)} loss-check failures:\n" + "\n".join(problems[:20])
        return LossReport(
            len(self.acknowledged), delivered, dead, len(self.rejected), len(self.unanswered), refused
        )
