"""The processes a bench run starts: the service (`python -m service serve`), the plain baseline, and the
load generator; each is stopped before the run goes on, so no two measurements share the machine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from service.config import PROJECT_DIR
from tests.helpers import wait_for
from tests.service_process import free_port

STOP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0


class Server:
    """A server subprocess on a free loopback port, ready once GET /readyz answers 200."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [arg.replace("{port}", str(self.port)) for arg in args]
        self._env = {**env, "ECO_HOST": "127.0.0.1", "ECO_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Server:
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, *self._args, env=self._env, stdout=log, stderr=log, cwd=PROJECT_DIR
            )
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self._process.returncode}: {self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout_s=READY_TIMEOUT_S, interval_s=0.1)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """SIGTERM and a graceful stop; SIGKILL only if it outlives the timeout."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


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


def service(dsn: str, log_dir: Path, *, workers: int = 1, name: str = "service") -> Server:
    return Server(name, ["-m", "service", "serve"], service_env(dsn, workers), log_dir)


def plain(dsn: str, log_dir: Path) -> Server:
    return Server("plain", ["-m", "tests.bench.plain", "{port}", dsn], dict(os.environ), log_dir)


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
