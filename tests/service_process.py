"""Run `python -m service serve` as a real process, as `make run` does, for tests that signal or kill it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from service.config import PROJECT_DIR
from tests.helpers import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVE_ARGS = ("-m", "service", "serve")
# What no process can catch or forward: a container's kill or freeze reaches every process of the service.
WHOLE_SERVICE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT})


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def children_of(pid: int) -> set[int]:
    """Live processes the supervisor `pid` started (multiprocessing's spawned children), from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if b"spawn_main" in cmdline:
            children.add(int(stat.parent.name))
    return children


class ServiceProcess:
    """A server subprocess on a free loopback port, ready once GET /readyz answers 200.

    By default `python -m service serve`, as `make run` starts it; `args` may name another server (the
    bench's baseline), with `{port}` standing for the port.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        args: tuple[str, ...] = SERVE_ARGS,
        name: str = "service",
        cwd: Path = PROJECT_DIR,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = [arg.replace("{port}", str(self.port)) for arg in args]
        self._env = {**os.environ, **env, "ECO_HOST": "127.0.0.1", "ECO_PORT": str(self.port)}
        self._log_path = log_path
        # The tree `-m service` imports from (another release's, extracted from git history).
        self._cwd = cwd
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        with self._log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self._args, env=self._env, stdout=log, stderr=log, cwd=self._cwd
            )
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.process.returncode}: {self.log()[-2000:]}"
                    )
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout_s=timeout_s, interval_s=0.1)

    async def pids(self) -> tuple[int, int | None]:
        """(the process that answers HTTP, the relay process or None): the main process itself, or under the
        supervisor its HTTP child and the relay process that /readyz names."""
        assert self.process is not None
        children = children_of(self.process.pid)
        if not children:
            return self.process.pid, None
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/readyz") as resp:
            relay = (await resp.json()).get("relay_process", {}).get("pid")
        [http] = children - {relay}
        return http, relay

    def send(self, signum: int) -> None:
        """SIGTERM and SIGINT go to the main process, which forwards them to its own (`serve` supervises an
        HTTP process and a relay process); SIGKILL, SIGSTOP and SIGCONT reach every one of them."""
        assert self.process is not None
        if signum in WHOLE_SERVICE_SIGNALS:
            for child in children_of(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signum)
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout_s):
            return await self.process.wait()

    async def stop(self) -> None:
        """SIGKILL, for tests that have already checked what they wanted of the process."""
        if self.process is not None and self.process.returncode is None:
            self.send(signal.SIGKILL)
            await self.process.wait()

    async def terminate(self, timeout_s: float = 30.0) -> None:
        """SIGTERM and a graceful stop; SIGKILL only if it outlives the timeout."""
        if self.process is None or self.process.returncode is not None:
            return
        self.send(signal.SIGTERM)
        try:
            await self.wait(timeout_s)
        except TimeoutError:
            await self.stop()

    async def __aenter__(self) -> ServiceProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.terminate()

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""
