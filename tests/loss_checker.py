"""The loss checker: what the service promised (202, 204) against what reached the target.

Every signal it posts carries a client `signal_id` and a run stamp in its meta, so each request has a known
id whatever its fate; so do its votes (an id in their meta) and its module usages (a module key of their
own). A request ends one of three ways:
- acknowledged (202, 204): the id must end in its target table exactly once, or, when its parent
  interaction never reached the target, be dead-lettered in `eco_outbox.events`; a signal the test expects
  the target to refuse (`expect_refused`) must instead be dead with the refusal's SQLSTATE as its error;
- rejected (an answer other than 202): the id must appear nowhere, neither in the target nor in the outbox;
- unanswered (the connection died with the process): either fate is allowed, but never twice.
And no stamped row in the target may carry an id the checker did not post.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import aiohttp
import aiopg

from tests.helpers import fetch, wait_for

STAMP_KEY = "loss_checker_run"
ID_KEY = "loss_checker_id"

SIGNAL, FEEDBACK, MODULE_USAGE = "signal", "feedback", "module_usage"

# Each kind's token (the id the checker knows it by) in the target, and in the outbox's payload; signals'
# is the row id itself.
TARGET_TOKENS = {
    SIGNAL: ("analytics.eco_passive_signals", "id::text"),
    FEEDBACK: ("analytics.eco_feedback", f"meta ->> '{ID_KEY}'"),
    MODULE_USAGE: ("analytics.eco_module_usages", "module_key"),
}
OUTBOX_TOKENS = {
    SIGNAL: "key::text",
    FEEDBACK: f"payload -> 'meta' ->> '{ID_KEY}'",
    MODULE_USAGE: "payload ->> 'module_key'",
}


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
    kinds: dict[str, str] = field(default_factory=dict)  # token -> kind, for the tokens that are no signal
    _numbers: count = field(default_factory=count)

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

    async def post_child(
        self, session: aiohttp.ClientSession, url: str, kind: str, interaction_id: str, vote: str = "up"
    ) -> int | None:
        """POST one vote (FEEDBACK) or module usage (MODULE_USAGE) as the ECO app does; expects 204."""
        token = f"lc-{self.run}-{next(self._numbers)}"
        self.kinds[token] = kind
        if kind == FEEDBACK:
            path = "/api/feedback"
            body: dict[str, Any] = {
                "interaction_id": interaction_id,
                "vote": vote,
                "arm": token,
                "meta": {STAMP_KEY: self.run, ID_KEY: token},
            }
        else:
            path, body = (
                "/api/module-usage",
                {"interactionId": interaction_id, "moduleKey": token, "position": 1},
            )
        try:
            async with session.post(f"{url}{path}", json=body) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, ConnectionError):
            self.unanswered.add(token)
            return None
        if status == 204:
            self.acknowledged[token] = interaction_id
        else:
            self.rejected.add(token)
        return status

    def kind_of(self, token: str) -> str:
        return self.kinds.get(token, SIGNAL)

    @property
    def posted(self) -> list[str]:
        return [*self.acknowledged, *self.rejected, *self.unanswered]

    def _posted_of(self, kind: str) -> list[str]:
        return [token for token in self.posted if self.kind_of(token) == kind]

    async def pending(self, outbox: aiopg.Pool) -> int:
        return sum(state == "pending" for state, _ in (await self._outbox_rows(outbox)).values())

    async def _outbox_rows(self, outbox: aiopg.Pool) -> dict[str, tuple[str, str | None]]:
        rows: dict[str, tuple[str, str | None]] = {}
        for kind, token in OUTBOX_TOKENS.items():
            if posted := self._posted_of(kind):
                for key, state, last_error in await fetch(
                    outbox,
                    f"select {token}, state, last_error from eco_outbox.events"
                    f" where kind = %s and {token} = any(%s)",
                    (kind, posted),
                ):
                    rows[key] = (state, last_error)
        return rows

    async def _in_target(self, target: aiopg.Pool) -> dict[str, int]:
        found: dict[str, int] = {}
        for kind, (table, token) in TARGET_TOKENS.items():
            if posted := self._posted_of(kind):
                found.update(
                    await fetch(
                        target,
                        f"select {token}, count(*) from {table} where {token} = any(%s) group by 1",
                        (posted,),
                    )
                )
        return found

    async def wait_settled(self, outbox: aiopg.Pool, timeout_s: float = 30.0) -> None:
        """Until none of the posted signals is pending: each is delivered or dead."""
        await wait_for(
            lambda: self.pending(outbox), lambda count: count == 0, timeout_s=timeout_s, interval_s=0.05
        )

    async def verify(self, outbox: aiopg.Pool, target: aiopg.Pool) -> LossReport:
        in_target = await self._in_target(target)
        outbox_rows = await self._outbox_rows(outbox)
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
            stored = in_target.get(key, 0)
            if key in self.expect_refused:
                state, error = outbox_rows.get(key, (None, None))
                if stored == 0 and state == "dead" and error and error[:5].isalnum() and error[5:7] == ": ":
                    refused += 1
                else:
                    problems.append(f"refused {key}: {stored} in target, outbox {state} ({error})")
            elif stored == 1 and parent in parents:
                delivered += 1
            elif stored == 0 and parent not in parents and outbox_state.get(key) == "dead":
                dead += 1
            else:
                problems.append(
                    f"acknowledged {self.kind_of(key)} {key}: {stored} in target,"
                    f" outbox {outbox_state.get(key)},"
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
        known = [*self.acknowledged, *self.unanswered]
        strays = await fetch(
            target,
            "select id::text from analytics.eco_passive_signals"
            " where meta ->> %s = %s and not (id = any(%s::uuid[]))",
            (STAMP_KEY, self.run, [key for key in known if self.kind_of(key) == SIGNAL]),
        )
        problems.extend(f"stored but never acknowledged: {row[0]}" for row in strays)
        feedback_strays = await fetch(
            target,
            f"select meta ->> '{ID_KEY}' from analytics.eco_feedback where meta ->> %s = %s"
            f" and not (meta ->> '{ID_KEY}' = any(%s))",
            (STAMP_KEY, self.run, known),
        )
        problems.extend(f"vote stored but never acknowledged: {row[0]}" for row in feedback_strays)
        assert not problems, f"{len(problems)} loss-check failures:\n" + "\n".join(problems[:20])
        return LossReport(
            len(self.acknowledged), delivered, dead, len(self.rejected), len(self.unanswered), refused
        )
