"""The processes a bench run starts: the service (`python -m service serve`), the baselines (no database, one
INSERT per request) and the Python load generator; each is stopped before the run goes on, so no two
measurements share the machine."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from service.config import PROJECT_DIR
from tests.service_process import ServiceProcess


def service_env(dsn: str, workers: int = 1, **extra: str) -> dict[str, str]:
    """The service as `make run` starts it, on the bench database, without the per-client rate limit (one
    load generator is one client) and logging warnings only."""
    env = {key: value for key, value in os.environ.items() if key != "TARGET_DATABASE_URL"}
    return {
        **env,
        "DATABASE_URL": dsn,
        "ECO_RATE_LIMIT_PER_S": "0",
        "ECO_LOG_LEVEL": env.get("ECO_LOG_LEVEL", "WARNING"),
        "ECO_WORKERS": str(workers),
        **extra,
    }


def service(
    dsn: str, log_dir: Path, *, workers: int = 1, name: str = "service", **extra: str
) -> ServiceProcess:
    return ServiceProcess(service_env(dsn, workers, **extra), log_dir / f"{name}.log", name=name)


def ceiling(log_dir: Path) -> ServiceProcess:
    return ServiceProcess(
        {}, log_dir / "ceiling.log", args=("-m", "tests.bench.ceiling", "{port}"), name="ceiling"
    )


def plain(dsn: str, log_dir: Path) -> ServiceProcess:
    return ServiceProcess(
        {}, log_dir / "plain.log", args=("-m", "tests.bench.plain", "{port}", dsn), name="plain"
    )


async def loadgen(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run the load generator in its own process; its JSON result."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.loadgen",
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=PROJECT_DIR,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {err.decode()[-2000:]}")
    return json.loads(out)
