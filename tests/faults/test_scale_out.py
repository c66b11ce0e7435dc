"""Scale-out: three service nodes, each with its own outbox database (DATABASE_URL) and one shared target
(TARGET_DATABASE_URL), behind no sticky sessions. A chat starts on one node and its signals reach the other
two, whose relays write them under a parent that another node's relay delivered. One node is SIGKILLed with a
backlog in its outbox and restarted on that same outbox: every acknowledged signal reaches the target once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.conftest import ask, open_pool, service_env
from tests.faults.target_probes import deliveries, install_brake, install_delivery_log
from tests.helpers import probe, scalar, wait_for
from tests.loss_checker import LossChecker
from tests.pg import migrate
from tests.pgcluster import PgCluster
from tests.service_process import ServiceProcess

NODES = 3
CHATS = 6
# Signals posted before and after the kill, in requests of this many.
SIGNALS_PER_ROUND = 600
REQUEST_ROWS = 10
# Each insert into the target waits this long, so that the killed node still has a backlog when it dies.
BRAKE_S = 0.05
RELAY_BATCH = 25
VICTIM = 1
# Bound on the requests sent to the victim around the kill (it stops at the first unanswered one).
MAX_LATE_REQUESTS = 10_000


def requests_round(
    checkers: list[LossChecker], chats: list[tuple[int, str]], round_: int
) -> list[tuple[int, list[dict[str, Any]]]]:
    """(node, bodies) per request: each chat's signals go to the nodes other than the one it started on."""
    out: list[tuple[int, list[dict[str, Any]]]] = []
    for number in range(SIGNALS_PER_ROUND // REQUEST_ROWS):
        home, parent = chats[number % len(chats)]
        node = (home + 1 + number // len(chats) % (NODES - 1)) % NODES
        bodies = [
            checkers[node].body(parent, round=round_, i=number * REQUEST_ROWS + i)
            for i in range(REQUEST_ROWS)
        ]
        out.append((node, bodies))
    return out


async def post_round(
    session: aiohttp.ClientSession,
    nodes: list[ServiceProcess],
    checkers: list[LossChecker],
    requests: list[tuple[int, list[dict[str, Any]]]],
) -> None:
    statuses = await asyncio.gather(
        *(checkers[node].post(session, nodes[node].url, bodies) for node, bodies in requests)
    )
    assert set(statuses) == {202}


@pytest.mark.slow
async def test_three_nodes_each_with_its_outbox_deliver_every_acknowledged_signal_once(
    outbox_server: PgCluster, target_server: PgCluster, tmp_path: Path
) -> None:
    outbox_dsns = [outbox_server.create_database() for _ in range(NODES)]
    target_dsn = target_server.create_database()
    for dsn in outbox_dsns:
        await migrate(dsn, target_dsn)
    envs = [
        service_env(dsn, TARGET_DATABASE_URL=target_dsn, ECO_RELAY_BATCH=str(RELAY_BATCH))
        for dsn in outbox_dsns
    ]
    nodes = [ServiceProcess(env, tmp_path / f"node-{i}.log", name=f"node-{i}") for i, env in enumerate(envs)]
    restarted = ServiceProcess(envs[VICTIM], tmp_path / f"node-{VICTIM}-again.log", name=f"node-{VICTIM}")
    outboxes = [await open_pool(dsn) for dsn in outbox_dsns]
    target = await open_pool(target_dsn)
    checkers = [LossChecker() for _ in range(NODES)]
    try:
        await install_delivery_log(target)
        await asyncio.gather(*(node.start() for node in nodes))
        async with aiohttp.ClientSession() as session:
            chats = [(i % NODES, await ask(session, nodes[i % NODES].url)) for i in range(CHATS)]
            # The parents reach the target through their own node's relay, before any signal goes out.
            await wait_for(
                lambda: scalar(target, "select count(*) from analytics.eco_interactions"),
                lambda count: count == CHATS,
            )
            await install_brake(target, BRAKE_S)
            await post_round(session, nodes, checkers, requests_round(checkers, chats, 0))

            victim = checkers[VICTIM]

            async def keep_posting() -> None:
                """Intake in flight at the kill: these requests end answered or unanswered, never lost."""
                for _ in range(MAX_LATE_REQUESTS):
                    await victim.post(session, nodes[VICTIM].url, [victim.body(chats[0][1], late=True)])

            acknowledged = len(victim.acknowledged)
            posting = asyncio.create_task(keep_posting())
            await wait_for(probe(lambda: len(victim.acknowledged)), lambda n: n >= acknowledged + 5)
            nodes[VICTIM].send(signal.SIGKILL)
            assert await nodes[VICTIM].wait(timeout_s=10) == -signal.SIGKILL
            await wait_for(probe(lambda: posting.done() or bool(victim.unanswered)), timeout_s=10)
            posting.cancel()
            await asyncio.gather(posting, return_exceptions=True)
            assert await victim.pending(outboxes[VICTIM]) > 0, (
                "the kill must land before the backlog is relayed"
            )

            await restarted.start()
            nodes[VICTIM] = restarted
            await post_round(session, nodes, checkers, requests_round(checkers, chats, 1))

        for checker, outbox in zip(checkers, outboxes, strict=True):
            await checker.wait_settled(outbox, timeout_s=120)
        reports = [
            await checker.verify(outbox, target) for checker, outbox in zip(checkers, outboxes, strict=True)
        ]
        # Every chat has a parent, so nothing is dead: every acknowledged signal is in the target, once.
        assert [report.delivered for report in reports] == [report.acknowledged for report in reports]
        assert sum(report.acknowledged for report in reports) > 2 * SIGNALS_PER_ROUND
        assert all(report.delivered > 0 for report in reports)
        # Re-delivery happens only for the batches the victim had in hand at the kill; a row is stored once.
        assert max((await deliveries(target)).values()) <= 2
        assert await scalar(target, "select count(*) from analytics.eco_interactions") == CHATS
        for outbox in outboxes:
            assert (
                await scalar(outbox, "select count(*) from eco_outbox.events where state <> 'delivered'") == 0
            )
    finally:
        await asyncio.gather(*(node.stop() for node in [*nodes, restarted]))
        for pool in [*outboxes, target]:
            pool.close()
            await pool.wait_closed()
        for dsn in outbox_dsns:
            outbox_server.drop_database(dsn)
        target_server.drop_database(target_dsn)
