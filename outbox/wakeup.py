"""LISTEN for the outbox's NOTIFY on a connection of its own, and wake the relay.

NOTIFY only makes delivery faster; the relay's poll interval guarantees it. So this listener reconnects with
backoff when its connection dies, and wakes the relay on every (re)connect to cover what it missed meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiopg
from loguru import logger

from outbox.background import BackgroundTask
from outbox.errors import CONNECTION_ERRORS, classify, describe
from outbox.names import OutboxNames
from outbox.queries import queries


class NotifyListener(BackgroundTask):
    task_name = "outbox-listener"

    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[], None],
        names: OutboxNames,
        *,
        timeout_s: float = 10.0,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
    ) -> None:
        super().__init__(names)
        self._dsn = dsn
        self._on_notify = on_notify
        self._listen_sql = queries(names)["listen"].sql
        self._timeout_s = timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s

    async def _run(self) -> None:
        delay_s = self._reconnect_min_s
        while True:
            try:
                async with aiopg.connect(self._dsn, timeout=self._timeout_s, enable_hstore=False) as conn:
                    async with conn.cursor() as cur:
                        await cur.execute(self._listen_sql)
                    self.health.succeeded()
                    delay_s = self._reconnect_min_s
                    self._on_notify()
                    while True:
                        await conn.notifies.get()
                        self._on_notify()
            except CONNECTION_ERRORS as exc:
                self.health.failed(classify(exc), describe(exc))
                logger.bind(code="listen_lost", delay_ms=round(delay_s * 1000)).warning(
                    "outbox LISTEN connection lost: {}", exc
                )
            except Exception as exc:
                # aiopg closes the notifies queue with the connection's own error.
                self.health.failed(classify(exc), describe(exc))
                logger.bind(code="listen_lost", delay_ms=round(delay_s * 1000)).exception(
                    "outbox LISTEN failed"
                )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, self._reconnect_max_s)
