"""`python -m service ask`: against the app on a real port, the reply streams to stdout, the interaction id
to stderr (and it is the one the service stored); failures are told, with a non-zero exit."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

from service.app import create_app
from service.chat.responder import OfflineResponder
from service.cli.client import ask
from service.config import PROJECT_DIR, Config
from tests.helpers import fetch, wait_for

CLI_TIMEOUT_S = 60
INTERACTION_LINE = re.compile(r"^interaction ([0-9a-f-]{36})$", re.MULTILINE)


@pytest.fixture
async def service_url(make_config: Callable[..., Config], aiohttp_server: Any) -> str:
    server = await aiohttp_server(create_app(make_config(offline_chunk_delay_ms=5.0)))
    return str(server.make_url("/"))


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        cwd=PROJECT_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CLI_TIMEOUT_S):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_ask_streams_the_reply_and_prints_the_interaction_id(service_url: str, db: Any) -> None:
    code, stdout, stderr = await run_cli("ask", "Olá", "--url", service_url)
    assert code == 0, stderr
    assert stdout == OfflineResponder().reply_for("Olá") + "\n"
    match = INTERACTION_LINE.search(stderr)
    assert match, stderr
    iid = match.group(1)
    assert "done: stop" in stderr
    rows = await wait_for(
        lambda: fetch(db, "select id::text from analytics.eco_interactions where id = %s", (iid,))
    )
    assert rows == [(iid,)]


async def test_ask_reports_a_rejected_message(service_url: str) -> None:
    code, stdout, stderr = await run_cli("ask", " ", "--url", service_url)
    assert code == 1
    assert stdout == ""
    assert "HTTP 422 validation_failed" in stderr and "must not be blank" in stderr


async def test_ask_prints_chunks_as_they_come(service_url: str) -> None:
    """In process: every chunk is written (and flushed) in order, and the outcome carries the id."""
    out, err = io.StringIO(), io.StringIO()
    outcome = await asyncio.to_thread(ask, service_url, "Uma pergunta", out=out, err=err, timeout_s=10)
    assert outcome.ok, err.getvalue()
    assert outcome.content == OfflineResponder().reply_for("Uma pergunta")
    assert out.getvalue() == outcome.content + "\n"
    assert f"interaction {outcome.interaction_id}" in err.getvalue()


async def test_ask_without_a_server(unused_tcp_port: int) -> None:
    out, err = io.StringIO(), io.StringIO()
    outcome = await asyncio.to_thread(ask, f"http://127.0.0.1:{unused_tcp_port}", "Olá", out=out, err=err)
    assert not outcome.ok
    assert outcome.interaction_id is None
    assert "ConnectError" in err.getvalue()
