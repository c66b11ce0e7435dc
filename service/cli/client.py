"""`python -m service ask "Olá"`: stream a reply to the terminal, as any SSE client of ask-eco would.

The reply goes to stdout as it arrives; the interaction id and how the stream ended go to stderr, so that
`python -m service ask "…" > reply.txt` keeps only the reply.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
from httpx_sse import SSEError, connect_sse

CONNECT_TIMEOUT_S = 10.0

EXIT_OK = 0
EXIT_ERROR = 1


@dataclass
class AskOutcome:
    interaction_id: str | None = None
    content: str = ""
    finish_reason: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish_reason == "stop"


def _problem(response: httpx.Response) -> str:
    response.read()
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    problem = f"HTTP {response.status_code} {body.get('error', '')}: {body.get('message', '')}"
    if body.get("details"):
        problem += f" {json.dumps(body['details'], ensure_ascii=False)}"
    return problem


def ask(
    url: str,
    message: str,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    timeout_s: float = 60.0,
) -> AskOutcome:
    """POST the message to `url`/api/ask-eco and print the chunks as they come. `timeout_s` bounds each
    wait for the next byte (the server's keep-alive comments count), not the whole reply."""
    outcome = AskOutcome()
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
    body = {"message": message, "client_message_id": str(uuid.uuid4())}
    try:
        with (
            httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as client,
            connect_sse(client, "POST", "/api/ask-eco", json=body) as source,
        ):
            if source.response.status_code != 200:
                outcome.error = _problem(source.response)
            else:
                outcome.interaction_id = source.response.headers.get("X-Eco-Interaction-Id")
                print(f"interaction {outcome.interaction_id}", file=err, flush=True)
                for event in source.iter_sse():
                    _handle(event.event, json.loads(event.data), outcome, out, err)
                    if event.event == "done":
                        break
                else:
                    outcome.error = outcome.error or "the stream ended before `done`"
    except (httpx.HTTPError, SSEError, ValueError, KeyError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if outcome.error:
        print(f"error: {outcome.error}", file=err, flush=True)
    return outcome


def _handle(name: str, data: dict[str, Any], outcome: AskOutcome, out: TextIO, err: TextIO) -> None:
    if name == "prompt_ready":
        outcome.interaction_id = str(data["interaction_id"])
    elif name == "chunk":
        delta = str(data["delta"])
        outcome.content += delta
        out.write(delta)
        out.flush()
    elif name == "error":
        outcome.error = f"{data['code']}: {data['message']}"
    elif name == "done":
        meta = data["meta"]
        outcome.finish_reason = str(meta["finishReason"])
        outcome.content = str(data["content"])
        out.write("\n")
        out.flush()
        usage = meta.get("usage") or {}
        print(
            f"done: {outcome.finish_reason}, {usage.get('output_tokens')} tokens,"
            f" interaction {outcome.interaction_id}",
            file=err,
            flush=True,
        )


def run_ask(url: str, message: str, timeout_s: float) -> int:
    # httpx logs every request at INFO; the terminal is for the reply.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return EXIT_OK if ask(url, message, timeout_s=timeout_s).ok else EXIT_ERROR
