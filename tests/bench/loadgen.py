"""The bench's load generator: a process of its own, loopback only, bounded in time and in count.

`python -m tests.bench.loadgen '<json spec>'` prints one JSON result on stdout. The intake's closed loop is
wrk's (tests/bench/wrk.py); this generator drives what wrk cannot: an open loop that records each signal's
id, and SSE streams. The end-to-end and streams runs use minimal HTTP/1.1 clients on asyncio's transports:
aiohttp's client tops out near 5.5k req/s on one core of this machine and costs ~10x the memory per stream,
so it would measure itself. The ask-eco run, which needs an SSE parser and runs at a low rate, uses aiohttp.

Modes:
- `rate`: an open loop at `rate_per_s`, spread over `connections` connections; records each signal's id and
  the wall-clock time of its 202, for the end-to-end measurement.
- `ask`: `connections` concurrent ask-eco streams; the time from sending the request to reading
  `prompt_ready`, then the rest of the stream is read to `done`.
- `streams`: `connections` ask-eco streams at once (all connected before any request is sent); the gaps
  between one stream's successive `chunk` events, how many completed, and how many were open at once.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field

import aiohttp

HOST = "127.0.0.1"
HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"content-length:"


@dataclass(frozen=True)
class Spec:
    mode: str
    port: int
    connections: int
    duration_s: float
    max_requests: int
    rate_per_s: float = 0.0
    interaction_ids: list[str] = field(default_factory=list)
    path: str = "/api/signal"


@dataclass
class Result:
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    # rate mode: [signal id, wall-clock seconds of the 202]
    acked: list[tuple[str, float]] = field(default_factory=list)
    # streams mode: milliseconds between successive chunks of a stream, and the most streams open at once
    gaps_ms: list[float] = field(default_factory=list)
    peak_open: int = 0

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class _Http(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time. Reads the status and a Content-Length
    body (the service and the plain handler always send one)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(HEADER_END)
        if end < 0 or self._waiter is None:
            return
        head = self._buffer[:end].lower()
        start = head.find(CONTENT_LENGTH)
        if start < 0:
            self._fail(ConnectionError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", start)
        length = int(head[start + len(CONTENT_LENGTH) : line_end if line_end > 0 else None])
        if len(self._buffer) < end + 4 + length:
            return
        status = int(self._buffer[9:12])
        body = self._buffer[end + 4 : end + 4 + length]
        self._buffer = self._buffer[end + 4 + length :]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter


def _signal_request(path: str, interaction_id: str, signal_id: str) -> bytes:
    body = f'{{"interaction_id":"{interaction_id}","name":"bench_view","signal_id":"{signal_id}",'
    body += '"meta":{"page":"/chat","scroll":0.5}}'
    encoded = body.encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"X-Eco-Guest-Id: bench\r\nContent-Length: {len(encoded)}\r\n\r\n"
    )
    return head.encode() + encoded


async def _connect(port: int) -> _Http:
    _, protocol = await asyncio.get_running_loop().create_connection(_Http, HOST, port)
    return protocol


async def run_rate(spec: Spec) -> Result:
    """Request i leaves at start + i / rate, on connection i mod `connections`."""
    result = Result()
    statuses: Counter[int] = Counter()
    loop = asyncio.get_running_loop()
    total = min(spec.max_requests, int(spec.duration_s * spec.rate_per_s))
    interval_s = 1 / spec.rate_per_s
    connections = [await _connect(spec.port) for _ in range(spec.connections)]
    started = loop.time() + 0.05

    async def worker(index: int) -> None:
        connection = connections[index]
        for number in range(index, total, spec.connections):
            await asyncio.sleep(max(0.0, started + number * interval_s - loop.time()))
            signal_id = str(uuid.uuid4())
            raw = _signal_request(
                spec.path, spec.interaction_ids[number % len(spec.interaction_ids)], signal_id
            )
            before = loop.time()
            status, _ = await connection.request(raw)
            acked_at = time.time()
            result.latencies_ms.append((loop.time() - before) * 1000)
            statuses[status] += 1
            if status == 202:
                result.acked.append((signal_id, acked_at))

    try:
        await asyncio.gather(*(worker(i) for i in range(spec.connections)))
    finally:
        for connection in connections:
            assert connection.transport is not None
            connection.transport.close()
    result.seconds = loop.time() - started
    result.requests = len(result.latencies_ms)
    result.statuses = {str(k): v for k, v in statuses.items()}
    return result


async def run_ask(spec: Spec) -> Result:
    """`max_requests` ask-eco streams, `connections` at a time; latency: request sent to prompt_ready read."""
    result = Result()
    statuses: Counter[int] = Counter()
    url = f"http://{HOST}:{spec.port}/api/ask-eco"
    headers = {"Accept": "text/event-stream", "X-Eco-Guest-Id": "bench"}
    remaining = spec.max_requests
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0 and loop.time() < deadline:
            remaining -= 1
            before = loop.time()
            async with session.post(url, json={"message": "Olá, Eco"}, headers=headers) as response:
                statuses[response.status] += 1
                ready_ms: float | None = None
                async for line in response.content:
                    if ready_ms is None and line.startswith(b"event: prompt_ready"):
                        ready_ms = (loop.time() - before) * 1000
                    if line.startswith(b"event: done"):
                        break
                if ready_ms is not None:
                    result.latencies_ms.append(ready_ms)

    started = loop.time()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(spec.connections)))
    result.seconds = loop.time() - started
    result.requests = len(result.latencies_ms)
    result.statuses = {str(k): v for k, v in statuses.items()}
    return result


ASK_BODY = '{"message": "Olá, Eco, hoje eu queria conversar sobre como foi difícil a minha semana"}'.encode()
ASK_REQUEST = (
    f"POST /api/ask-eco HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    f"Accept: text/event-stream\r\nX-Eco-Guest-Id: bench\r\nContent-Length: {len(ASK_BODY)}\r\n\r\n"
).encode() + ASK_BODY
# An SSE event ends with an empty line (the service separates lines with a bare LF); the chunked transfer
# encoding's size lines fall between events, so they never split one.
EVENT_END = b"\n\n"


class _Stream(asyncio.Protocol):
    """One ask-eco stream: the arrival time of each `chunk` event, and whether `done` came."""

    def __init__(self, open_streams: list[int], result: Result) -> None:
        self.transport: asyncio.Transport | None = None
        self.finished: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._started = False
        self._last_chunk_at: float | None = None
        self._open = open_streams
        self._result = result

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        if not self._started:
            self._started = True
            self._open[0] += 1
            self._result.peak_open = max(self._result.peak_open, self._open[0])
        self._buffer += data
        *events, self._buffer = self._buffer.split(EVENT_END)
        for event in events:
            if b"event: chunk" in event:
                if self._last_chunk_at is not None:
                    self._result.gaps_ms.append((now - self._last_chunk_at) * 1000)
                self._last_chunk_at = now
            elif b"event: done" in event:
                self._end(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(False)

    def _end(self, completed: bool) -> None:
        if self.finished.done():
            return
        if self._started:
            self._open[0] -= 1
        self.finished.set_result(completed)
        assert self.transport is not None
        self.transport.close()


async def run_streams(spec: Spec) -> Result:
    """`connections` streams at once; every connection is open before the first request leaves."""
    result = Result()
    loop = asyncio.get_running_loop()
    open_streams = [0]
    streams = [
        protocol
        for _, protocol in await asyncio.gather(
            *(
                loop.create_connection(lambda: _Stream(open_streams, result), HOST, spec.port)
                for _ in range(spec.connections)
            )
        )
    ]
    started = loop.time()
    for stream in streams:
        assert stream.transport is not None
        stream.transport.write(ASK_REQUEST)
    async with asyncio.timeout(spec.duration_s):
        completed = await asyncio.gather(*(stream.finished for stream in streams))
    result.seconds = loop.time() - started
    result.requests = sum(completed)
    result.statuses = {"completed": sum(completed), "incomplete": len(completed) - sum(completed)}
    return result


MODES = {"rate": run_rate, "ask": run_ask, "streams": run_streams}


def main(argv: list[str]) -> int:
    spec = Spec(**json.loads(argv[1]))
    result = asyncio.run(MODES[spec.mode](spec))
    json.dump({**asdict(result), "per_s": result.per_s}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
