"""Run `python -m service serve` as a real process, as `make run` does, for tests that signal or kill it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.helpers import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **env, "ECO_HOST": "127.0.0.1", "ECO_PORT": str(self.port)}
        self._log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        log = self._log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", env=self._env, stdout=log, stderr=log
        )
        log.close()
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"service exited with {self.process.returncode}: {self.log()[-2000:]}"
                    )
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout_s=timeout_s, interval_s=0.1)

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout_s):
            return await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
