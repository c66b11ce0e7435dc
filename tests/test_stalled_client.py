"""A client that stops reading an SSE stream is cut off after ECO_SSE_SEND_TIMEOUT_S: its interaction is
completed, its stream closed, and the relay goes on delivering meanwhile."""

from __future__ import annotations

import asyncio
import json
import uuid

from aiohttp import web
from aiohttp.test_utils import TestServer

from service.keys import STREAMS
from tests.helpers import fetch, finish_reason, insert_interaction, probe, wait_for

# Enough megabytes that the kernel's socket buffers fill and the server's writes block.
BIG_DELTA_CHARS = 256 * 1024
MAX_CHUNKS = 400


async def endless_big_chunks(request: web.Request) -> web.StreamResponse:
    """An OpenAI-compatible stream of large deltas, bounded in count."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    delta = "x" * BIG_DELTA_CHARS
    frame = f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': delta}}]})}\n\n".encode()
    try:
        for _ in range(MAX_CHUNKS):
            await response.write(frame)
    except ConnectionResetError:
        pass
    return response


async def test_a_stalled_client_is_cut_off_and_completed(make_client, db) -> None:
    llm = web.Application()
    llm.router.add_post("/v1/chat/completions", endless_big_chunks)
    async with TestServer(llm, host="127.0.0.1") as upstream:
        client = await make_client(llm_url=str(upstream.make_url("/v1")), sse_send_timeout_s=0.3)
        body = json.dumps({"message": "oi"}).encode()
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            b"POST /api/ask-eco HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Accept: text/event-stream\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        interaction_id = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"x-eco-interaction-id:")
        )
        # From here on the client reads nothing more.
        try:
            parent = str(uuid.uuid4())
            await insert_interaction(db, parent)
            signal = await client.post("/api/signal", json={"interaction_id": parent, "name": "view"})
            assert signal.status == 202
            await wait_for(
                lambda: fetch(
                    db, "SELECT 1 FROM analytics.eco_passive_signals WHERE interaction_id = %s", (parent,)
                )
            )

            reason = await wait_for(lambda: finish_reason(db, interaction_id), timeout_s=30.0)
            assert reason == "client_disconnect"
            await wait_for(probe(lambda: len(client.app[STREAMS])), lambda open_streams: open_streams == 0)
        finally:
            writer.close()
