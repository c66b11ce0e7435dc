"""The intake load: wrk (C, Debian's `wrk`), so that the load generator costs little of the two cores and
does not measure itself (a Python generator read the no-database ceiling as ~9.8k req/s; wrk reads ~25k)."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("signal.lua")
RESULT_PREFIX = "BENCH_JSON "
# wrk counts a request that waits longer than this as a timeout (an error, never a latency).
REQUEST_TIMEOUT_S = 10
# Beyond the run itself: wrk's start and its connections' close.
EXIT_GRACE_S = 30.0


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    # Answers that were not 2xx or 3xx: the service and the baselines answer 202 to every good signal.
    non_2xx: int
    socket_errors: int

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def acked(self) -> int:
        return self.requests - self.non_2xx


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: `make bench` installs Debian's package")
    return path


async def run_wrk(
    url: str, parents: list[str], *, threads: int, connections: int, duration_s: float
) -> WrkRun:
    """One wrk run against `url`'s /api/signal; its counts and latency percentiles."""
    process = await asyncio.create_subprocess_exec(
        wrk_binary(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration_s:g}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        f"--script={SCRIPT}",
        url,
        "--",
        *parents,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(duration_s + EXIT_GRACE_S):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or len(lines) != 1:
        raise RuntimeError(
            f"wrk failed ({process.returncode}): {out.decode()[-2000:]} {err.decode()[-2000:]}"
        )
    result = json.loads(lines[0].removeprefix(RESULT_PREFIX))
    return WrkRun(
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        non_2xx=result["non_2xx"],
        socket_errors=sum(
            result[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
    )
