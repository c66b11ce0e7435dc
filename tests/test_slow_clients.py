"""Slow clients are cut off at a deadline: a trickled body is answered 408 and the connection closed, and a
request head that never completes gets the connection closed. Raw sockets, on the server as `serve` sets it
up; each test checks that the answer came while the client was still trickling, not when it gave up."""

from __future__ import annotations

import asyncio
from typing import Any

from service.app import create_app
from service.runtime.server import server_options

# The client sends a byte this often, for up to this many bytes: far longer than the deadlines below.
TRICKLE_S = 0.1
TRICKLE_BYTES = 300


async def start(aiohttp_server: Any, make_config: Any, **overrides: Any) -> Any:
    config = make_config(**overrides)
    # The test server sets handler_cancellation itself; everything else as `serve` has it.
    options = {key: value for key, value in server_options(config).items() if key != "handler_cancellation"}
    return await aiohttp_server(create_app(config), **options)


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """Send a byte every TRICKLE_S until the server answers or closes; (what it sent, bytes trickled)."""
    answer = asyncio.ensure_future(reader.read())
    sent = 0
    while not answer.done() and sent < TRICKLE_BYTES:
        try:
            writer.write(b" ")
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        await asyncio.wait([answer], timeout=TRICKLE_S)
    data = await asyncio.wait_for(answer, 30)
    return data, sent


async def test_a_trickled_body_is_answered_408_and_the_connection_closed(aiohttp_server, make_config) -> None:
    server = await start(aiohttp_server, make_config, body_timeout_s=0.5, header_timeout_s=60.0)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST /api/signal HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 32768\r\n\r\n{"
        )
        data, sent = await trickle(writer, reader)
    finally:
        writer.close()
    assert sent < TRICKLE_BYTES, "the server waited for the whole trickle"
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b'"error": "request_timeout"' in data
    # reader.read() returned: the server closed the connection after its answer.


async def test_a_request_head_that_never_completes_is_closed(aiohttp_server, make_config) -> None:
    server = await start(aiohttp_server, make_config, header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"POST /api/signal HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        data, sent = await trickle(writer, reader)
    finally:
        writer.close()
    assert sent < TRICKLE_BYTES, "the server waited for the whole trickle"
    assert data == b""


async def test_a_prompt_client_is_not_cut_off(aiohttp_server, make_config) -> None:
    """The same deadlines leave an ordinary request alone (the tests above can fail for the right reason)."""
    server = await start(aiohttp_server, make_config, body_timeout_s=0.5, header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    body = b'{"interaction_id": "00000000-0000-4000-8000-000000000001", "name": "view"}'
    try:
        writer.write(
            b"POST /api/signal HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 202 "), data[:200]
