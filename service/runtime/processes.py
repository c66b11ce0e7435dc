"""The supervisor `serve` becomes when there is more than one process to run: ECO_PROCESSES=N (formerly
ECO_WORKERS) HTTP processes on one port, and with ECO_RELAY_PROCESS (the default) one relay process beside
them, in which case the HTTP processes run no relay of their own.

The kernel spreads incoming connections over the HTTP processes (SO_REUSEPORT). Relays share the outbox
safely because claims use FOR UPDATE SKIP LOCKED, and every relay wakes on the same NOTIFY. The processes
keep their metrics in files of one private folder (prometheus-client's multiprocess mode), so /metrics,
whichever process answers it, sums them all; the folder goes with the supervisor. This process only
supervises: it starts the embedded database once (when there is no DATABASE_URL), applies the migrations
once before it starts the others (which do not migrate), forwards SIGTERM and SIGINT to them as SIGTERM,
and if one dies it stops the others and exits non-zero, so that whatever manages the service sees it fail.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType

from loguru import logger

from service.config import Config
from service.store import migrations
from service.store.embedded import start_embedded_postgres

# prometheus-client reads this variable when a worker first imports it, to pick its file-backed values.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# In the same private folder: prometheus-client reads only its own *.db files there.
RELAY_REPORT_FILE = "relay-report.json"
STOP_TIMEOUT_S = 30.0
ORPHAN_CHECK_S = 1.0


def _stop_when_orphaned(parent_pid: int) -> None:
    """A worker whose supervisor was killed (SIGKILL cannot be forwarded) stops itself gracefully."""
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_CHECK_S)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(config: Config, parent_pid: int) -> None:
    from service.runtime.logs import setup_logging
    from service.runtime.server import serve

    # Its own process group: a Ctrl-C in the terminal reaches the supervisor only, which forwards it once.
    os.setpgrp()
    setup_logging(config.log_json, config.log_level)
    threading.Thread(target=_stop_when_orphaned, args=(parent_pid,), daemon=True).start()
    serve(replace(config, processes=1), reuse_port=True)


def _relay_worker(config: Config, parent_pid: int) -> None:
    from service.runtime.logs import setup_logging
    from service.runtime.relay_process import run_relay

    os.setpgrp()
    setup_logging(config.log_json, config.log_level)
    threading.Thread(target=_stop_when_orphaned, args=(parent_pid,), daemon=True).start()
    asyncio.run(run_relay(config))


def supervise(config: Config) -> None:
    if config.database_url is None:
        config = replace(config, database_url=start_embedded_postgres(config.data_dir))
    # One migrator for all the workers, before they start: a worker that failed migrating would stop them all.
    outcomes = asyncio.run(
        migrations.migrate_dsns(
            config.database_url, config.target_database_url or config.database_url, config.migrations
        )
    )
    migrations.log_outcomes(outcomes)
    not_added = tuple(item for outcome in outcomes.values() for item in outcome.not_added.items())
    config = replace(config, migrate_on_start=False, not_added=not_added)
    metrics_dir = Path(tempfile.mkdtemp(prefix="eco-metrics-"))
    # Inherited by the spawned workers, which import prometheus-client afresh.
    os.environ[METRICS_DIR_ENV] = str(metrics_dir)
    try:
        relay_report = metrics_dir / RELAY_REPORT_FILE if config.relay_apart else None
        _supervise(replace(config, metrics_dir=metrics_dir, relay_report=relay_report))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(config: Config) -> None:
    context = multiprocessing.get_context("spawn")
    # With a relay process of its own, the HTTP processes run none.
    http_config = replace(config, relay=replace(config.relay, loops=0)) if config.relay_apart else config
    workers = [
        context.Process(target=_worker, args=(http_config, os.getpid()), name=f"eco-worker-{number}")
        for number in range(config.processes)
    ]
    if config.relay_apart:
        workers.append(context.Process(target=_relay_worker, args=(config, os.getpid()), name="eco-relay"))
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    if stopping:
        stop(signal.SIGTERM, None)
    logger.info(
        "eco-outbox: {} HTTP processes on http://{}:{}{}",
        config.processes,
        config.host,
        config.port,
        ", and a relay process" if config.relay_apart else "",
    )
    ended = wait([worker.sentinel for worker in workers])
    if not stopping:
        # By its sentinel: its exit code may not be collected yet when the sentinel is ready.
        failed = next(worker for worker in workers if worker.sentinel in ended)
        failed.join()
        logger.bind(code="worker_exited").error(
            "worker {} exited with {}; stopping the others", failed.name, failed.exitcode
        )
        stop(signal.SIGTERM, None)
    for worker in workers:
        worker.join(STOP_TIMEOUT_S)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
    if any(worker.exitcode for worker in workers) or not stopping:
        sys.exit(1)
