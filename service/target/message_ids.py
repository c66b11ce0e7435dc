"""Whether the target already holds an interaction with a client's message id, asked at the door.

The outbox refuses a repeated client message id by its dedupe key, but only for as long as it keeps the row:
after retention purged it, a reused id would be accepted (200, a stream), and its interaction would then
conflict in the target (message_id is unique there) and die, its signals with it. So the ask looks in the
target first. The target is not intake's dependency: unreachable or slow, it is not asked (None), and the
outbox's own check stands alone.
"""

from __future__ import annotations

import asyncio

import aiopg
from loguru import logger

from outbox.errors import CONNECTION_ERRORS, describe, server_cancelled
from service.target.queries import TARGET_QUERIES

# The lookup's bound, for a connection and for the statement; the statement's is the server's own
# (statement_timeout), so that no query is cancelled from here (aiopg would close its connection).
LOOKUP_TIMEOUT_MS = 1000

MESSAGE_ID_HELD_SQL = (
    f"SET LOCAL statement_timeout = {LOOKUP_TIMEOUT_MS}; {TARGET_QUERIES['message_id_held'].sql}"
)


def _unknown(exc: BaseException) -> None:
    logger.bind(code="target_unavailable").warning("message id not checked in the target: {}", describe(exc))


async def target_holds_message_id(pool: aiopg.Pool, message_id: str) -> bool | None:
    """True when an interaction of the target has `message_id`; None when the target could not say."""
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_MS / 1000):
            conn = await pool.acquire()
    except (*CONNECTION_ERRORS, TimeoutError) as exc:
        return _unknown(exc)
    try:
        async with conn.cursor() as cur:
            await cur.execute(MESSAGE_ID_HELD_SQL, {"message_id": message_id})
            [(held,)] = await cur.fetchall()
        return bool(held)
    except asyncio.CancelledError as exc:
        if not server_cancelled(exc):
            raise
        return _unknown(exc)
    except CONNECTION_ERRORS as exc:
        return _unknown(exc)
    finally:
        await pool.release(conn)
