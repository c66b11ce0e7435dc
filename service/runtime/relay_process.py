"""The relay in a process of its own (ECO_RELAY_PROCESS): its loops and the NOTIFY listener that wakes them,
with no HTTP server beside them.

In an HTTP process the relay's round trips wait their turn on an event loop busy with requests: under
intake load a batch's five round trips each queue behind hundreds of callbacks, and a row reaches the target
tens of milliseconds after its 202. Here the loop has nothing else to do (docs/performance.md has the
figures). Its health goes to the HTTP processes' /readyz through outbox.relay_report. SIGTERM or
SIGINT lets each loop finish the batch in hand.
"""

from __future__ import annotations

import asyncio
import signal

from loguru import logger

from outbox.relay import Relay
from outbox.relay_report import keep_reporting
from outbox.wakeup import NotifyListener
from service.config import Config
from service.store.database import open_databases
from service.store.outbox_names import OUTBOX_NAMES
from service.target.delivery import ECO_TARGET


async def run_relay(config: Config) -> None:
    """Deliver the outbox until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    databases = await open_databases(config)
    relay = Relay(databases.outbox, databases.target, ECO_TARGET, config.relay, names=OUTBOX_NAMES)
    listener = NotifyListener(databases.outbox_dsn, relay.wake, OUTBOX_NAMES, timeout_s=config.db_timeout_s)
    relay.start()
    listener.start()
    logger.info("eco-outbox relay: {} loops", config.relay.loops)
    reporting = None
    if config.relay_report is not None:
        reporting = asyncio.create_task(keep_reporting(config.relay_report, relay, listener, stop))
    try:
        await stop.wait()
    finally:
        if reporting is not None:
            await reporting
        await listener.stop()
        await relay.stop()
        await databases.close()
