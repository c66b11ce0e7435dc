"""The outbox refused while a stream is open: the stream still ends with `error` then `done` (one HTTP
response, read on the raw bytes), and the completion and telemetry, held in memory, land once the database
is back — by the retry loop, or by the flush on shutdown. The held queue is bounded and counts what it
drops."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiopg
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from psycopg2.extensions import make_dsn, parse_dsn

from outbox.deferred import DeferredWrites
from outbox.enqueue import OutboxWriter
from service.keys import DEFERRED
from service.store.outbox_names import OUTBOX_NAMES
from service.target.rows import InteractionRow, completion_event, signal_event
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, fetch, probe, wait_for
from tests.pg import admin

STREAM_TIMEOUT_S = 30.0
# Slow enough that the stream is still generating when the test refuses the database after prompt_ready.
CHUNK_DELAY_MS = 50.0


def refuse(database_url: str) -> None:
    """New connections are refused and open ones are cut: the outbox is gone, as in an outage."""
    name = parse_dsn(database_url)["dbname"]
    admin(
        make_dsn(database_url, dbname="postgres"),
        f"ALTER DATABASE {name} ALLOW_CONNECTIONS false",
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )


def allow(database_url: str) -> None:
    name = parse_dsn(database_url)["dbname"]
    admin(make_dsn(database_url, dbname="postgres"), f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 body; whatever follows the last chunk stays visible at the end."""
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out + rest[2:]
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def frames(text: str) -> list[tuple[str, dict[str, Any]]]:
    parsed = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


async def stream_with_outbox_refused(client: TestClient, database_url: str) -> tuple[bytes, str]:
    """Ask over a raw socket, refuse the outbox once prompt_ready has arrived, read to the end."""
    body = json.dumps({"message": "Olá, tudo bem? Conte uma história longa."}).encode()
    request = (
        b"POST /api/ask-eco HTTP/1.1\r\nHost: eco\r\nContent-Type: application/json\r\n"
        b"Accept: text/event-stream\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            writer.write(request)
            raw = await reader.readuntil(b"event: prompt_ready")
            raw += await reader.readuntil(b"\n\n")
            # Blocking on purpose: the app's loop stands still while the database goes away.
            refuse(database_url)
            raw += await reader.read()
    finally:
        writer.close()
    head = raw.split(b"\r\n", 1)[0]
    assert head == b"HTTP/1.1 200 OK", head
    interaction_id = raw.split(b"X-Eco-Interaction-Id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    return raw, interaction_id


def assert_one_response_ending_in_error_then_done(raw: bytes) -> None:
    assert raw.count(b"HTTP/1.1 ") == 1, raw[-600:]
    headers, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in headers
    text = dechunk(body).decode()
    assert text.endswith("\n\n") and "HTTP/" not in text, text[-400:]
    events = frames(text)
    names = [name for name, _ in events]
    assert names[0] == "prompt_ready" and names[-2:] == ["error", "done"], names
    error, done = events[-2][1], events[-1][1]
    assert error["code"] == "completion_deferred"
    assert done["meta"]["finishReason"] == "error" and done["content"]


async def outbox_rows(db: aiopg.Pool, interaction_id: str) -> set[str]:
    rows = await fetch(
        db,
        f"SELECT kind, coalesce(payload->>'signal', '') FROM {OUTBOX_ROWS} WHERE group_key = %s",
        (interaction_id,),
    )
    return {f"{kind}:{name}".rstrip(":") for kind, name in rows}


EVERY_ROW = {
    "interaction",
    "interaction_completion",
    "signal:prompt_ready",
    "signal:first_token",
    "signal:done",
}


async def test_outbox_lost_mid_stream_ends_it_with_error_then_done_and_the_rows_land_later(
    make_client: Callable[..., Any], database_url: str, db: aiopg.Pool
) -> None:
    client = await make_client(offline_chunk_delay_ms=CHUNK_DELAY_MS, deferred_retry_s=0.05)
    try:
        raw, interaction_id = await stream_with_outbox_refused(client, database_url)
        assert_one_response_ending_in_error_then_done(raw)
        held = len(client.app[DEFERRED])
        assert held == 3, "the completion, first_token and done are held"
    finally:
        allow(database_url)
    await wait_for(probe(lambda: len(client.app[DEFERRED])), lambda rows: rows == 0)
    assert await outbox_rows(db, interaction_id) == EVERY_ROW


async def test_held_rows_are_flushed_on_shutdown(
    make_client: Callable[..., Any], database_url: str, db: aiopg.Pool
) -> None:
    # The retry loop would wait an hour: only the shutdown flush can write the held rows.
    client = await make_client(offline_chunk_delay_ms=CHUNK_DELAY_MS, deferred_retry_s=3600.0)
    try:
        raw, interaction_id = await stream_with_outbox_refused(client, database_url)
        assert_one_response_ending_in_error_then_done(raw)
        assert len(client.app[DEFERRED]) == 3
    finally:
        allow(database_url)
    assert await outbox_rows(db, interaction_id) == {"interaction", "signal:prompt_ready"}
    await client.close()
    assert await outbox_rows(db, interaction_id) == EVERY_ROW


def dropped_total() -> float:
    return REGISTRY.get_sample_value("eco_outbox_deferred_dropped_total") or 0.0


async def test_the_held_queue_is_bounded_and_counts_what_it_drops(database_url: str, db: aiopg.Pool) -> None:
    pool = await aiopg.create_pool(database_url, minsize=0, maxsize=2, enable_hstore=False, timeout=5.0)
    writer = OutboxWriter(pool, OUTBOX_NAMES)
    await writer.start()
    deferred = DeferredWrites(writer, max_rows=3, retry_s=3600.0)
    batches = []
    for _ in range(3):
        iid = uuid.uuid4()
        row = InteractionRow(id=iid, created_at=datetime.now(UTC))
        batches.append([completion_event(row), signal_event(iid, "done", {"type": "server"})])
    before = dropped_total()
    try:
        refuse(database_url)
        try:
            for batch in batches:
                assert await deferred.write(batch) is False
        finally:
            allow(database_url)
        assert len(deferred) == 2, "the two oldest batches went to keep at most 3 rows"
        assert dropped_total() == before + 4
        assert await deferred.flush() is True
        assert len(deferred) == 0
        kept = await fetch(db, f"SELECT DISTINCT group_key::text FROM {OUTBOX_ROWS}")
        assert kept == [(str(batches[-1][0].group_key),)]
    finally:
        await writer.close()
        pool.close()
        await pool.wait_closed()


async def test_prompt_ready_commits_in_the_interactions_statement(
    make_client: Callable[..., Any], db: aiopg.Pool
) -> None:
    """Both rows carry one transaction id (xmin), read as soon as prompt_ready arrives; a repeated
    client_message_id adds neither. No relay (an intake-only node): the rows stay in the table, where a
    relay would move them to the log of delivered rows with its own transaction id."""
    client = await make_client(relay=replace(TEST_RELAY, loops=0))
    body = {"message": "oi", "client_message_id": "cm-1"}
    resp = await client.post("/api/ask-eco", json=body, headers={"Accept": "text/event-stream"})
    assert resp.status == 200
    interaction_id = resp.headers["X-Eco-Interaction-Id"]
    assert b"event: prompt_ready" in await resp.content.readuntil(b"\n\n")
    rows = await fetch(
        db,
        "SELECT kind, payload->>'signal', xmin::text FROM eco_outbox.events WHERE group_key = %s "
        "AND (kind = 'interaction' OR payload->>'signal' = 'prompt_ready')",
        (interaction_id,),
    )
    assert sorted(row[:2] for row in rows) == [("interaction", None), ("signal", "prompt_ready")]
    assert len({row[2] for row in rows}) == 1, rows
    await resp.read()

    duplicate = await client.post("/api/ask-eco", json=body)
    assert duplicate.status == 409
    prompt_readies = await fetch(
        db, "SELECT count(*) FROM eco_outbox.events WHERE payload->>'signal' = 'prompt_ready'"
    )
    assert prompt_readies == [(1,)]


REFUSE_COMPLETIONS_SQL = """
CREATE FUNCTION public.refuse_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'completion refused by the test';
END $$;
CREATE TRIGGER refuse_completion BEFORE INSERT ON eco_outbox.events
    FOR EACH ROW WHEN (NEW.kind = 'interaction_completion') EXECUTE FUNCTION public.refuse_completion();
"""


async def test_a_failure_the_run_does_not_catch_still_ends_the_stream_with_error_then_done(
    client: TestClient, db: aiopg.Pool
) -> None:
    """The outbox refuses the completion row itself (not an outage, so nothing to retry): the error is raised
    after the first byte, and the stream still ends with error then done, in one response."""
    await fetch(db, REFUSE_COMPLETIONS_SQL)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = b'{"message": "oi"}'
    try:
        async with asyncio.timeout(STREAM_TIMEOUT_S):
            writer.write(
                b"POST /api/ask-eco HTTP/1.1\r\nHost: eco\r\nContent-Type: application/json\r\n"
                b"Accept: text/event-stream\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            raw = await reader.read()
    finally:
        writer.close()
    assert raw.count(b"HTTP/1.1 ") == 1, raw[-600:]
    events = frames(dechunk(raw.partition(b"\r\n\r\n")[2]).decode())
    assert [name for name, _ in events][-2:] == ["error", "done"]
    assert events[-2][1]["code"] == "stream_failed"
    assert events[-1][1]["meta"]["finishReason"] == "error"
