"""One ask-eco interaction, from the outbox write before `prompt_ready` to its completion.

The SSE and the JSON views both drive an `InteractionRun`; it yields the SPEC's events in order and records
the completion (tokens, latency, finish reason) through the outbox exactly once, however the run ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from outbox.deferred import DeferredWrites
from outbox.enqueue import OutboxWriter
from outbox.events import EnqueueResult, OutboxEvent
from service.chat.responder import Responder, ResponderError, estimate_tokens
from service.chat.schemas import AskInput
from service.target.rows import InteractionRow, completion_event, interaction_event, signal_event

Event = tuple[str, dict[str, Any]]

FINISH_STOP = "stop"
FINISH_ERROR = "error"
FINISH_CLIENT_DISCONNECT = "client_disconnect"
FINISH_SHUTDOWN = "server_shutdown"
# The stream ran, but its completion met the outbox down: it is held and retried, not yet durable.
ERROR_COMPLETION_DEFERRED = "completion_deferred"


def _epoch_ms() -> int:
    """Now as the ECO app reads `at`: epoch milliseconds, a number."""
    return time.time_ns() // 1_000_000


# Work that outlives the request that started it (a completion after the client left): referenced here, since
# the event loop keeps only weak references to tasks.
_BACKGROUND: set[asyncio.Future[Any]] = set()


class DuplicateClientMessage(Exception):
    """An interaction with this client_message_id exists already: the ask adds no row (HTTP answers 409)."""


class _Stopped(Exception):
    """The server asked the run to end (shutdown)."""


class InteractionRun:
    def __init__(
        self,
        writer: OutboxWriter,
        responder: Responder,
        ask: AskInput,
        *,
        deferred: DeferredWrites,
        guest_id: str,
        session_id: str,
        client_message_id: str | None,
    ) -> None:
        self._writer = writer
        self._deferred = deferred
        self._responder = responder
        self._ask = ask
        self.interaction_id = uuid.uuid4()
        self.stream_id = uuid.uuid4()
        self.guest_id = guest_id
        self.session_id = session_id
        self.client_message_id = client_message_id
        self._started = time.perf_counter()
        self._started_at = datetime.now(UTC)
        self._parts: list[str] = []
        self._first_token_ms: int | None = None
        self._telemetry: list[OutboxEvent] = []
        self._completion: asyncio.Task[bool] | None = None
        self._stopping = False
        # The task awaiting the responder's next piece, while it awaits: the one a stop cancels.
        self._reading: asyncio.Task[Any] | None = None
        self.finish_reason: str | None = None
        self._row = InteractionRow(
            id=self.interaction_id,
            created_at=self._started_at,
            user_id=ask.user_id,
            session_id=session_id,
            message_id=client_message_id,
            prompt_hash=hashlib.sha256(ask.prompt.encode("utf-8")).hexdigest(),
            module_combo=list(responder.modules),
            meta={**ask.meta, "guest_id": guest_id, "stream_id": str(self.stream_id)},
        )

    def _since_start_ms(self) -> int:
        return round((time.perf_counter() - self._started) * 1000)

    def _telemetry_signal(self, name: str, meta: dict[str, Any]) -> None:
        self._telemetry.append(signal_event(self.interaction_id, name, {"type": "server", **meta}))

    def request_stop(self) -> None:
        """End the run at its next piece, or at once if it is waiting on the responder: the waiting read is
        cancelled from here, so that a chunk costs no stop waiter of its own."""
        if self._stopping:
            return
        self._stopping = True
        if self._reading is not None:
            self._reading.cancel()

    async def open(self) -> Event:
        """Commit the interaction and its `prompt_ready` telemetry in one statement; only then may
        `prompt_ready` (and any header) be sent. A repeated client_message_id conflicts on both rows."""
        since = self._since_start_ms()
        prompt_ready = signal_event(
            self.interaction_id,
            "prompt_ready",
            {"type": "server", "sinceStartMs": since, "stream_id": str(self.stream_id)},
        )
        if self.client_message_id:
            prompt_ready = replace(prompt_ready, dedupe_key=f"prompt_ready:{self.client_message_id}")
        opening = asyncio.ensure_future(self._writer.enqueue([interaction_event(self._row), prompt_ready]))
        try:
            [result, _] = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The client left while the interaction was being stored: if it is stored, it is completed.
            _BACKGROUND.add(opening)
            opening.add_done_callback(self._complete_if_opened)
            raise
        if not result.inserted:
            raise DuplicateClientMessage(self.client_message_id)
        return "prompt_ready", {
            "type": "prompt_ready",
            "interaction_id": str(self.interaction_id),
            "streamId": str(self.stream_id),
            "at": _epoch_ms(),
            "sinceStartMs": since,
        }

    def _complete_if_opened(self, opening: asyncio.Future[list[EnqueueResult]]) -> None:
        _BACKGROUND.discard(opening)
        if opening.cancelled() or opening.exception() is not None or not opening.result()[0].inserted:
            return
        completing = asyncio.ensure_future(self.complete(FINISH_CLIENT_DISCONNECT))
        _BACKGROUND.add(completing)
        completing.add_done_callback(_BACKGROUND.discard)

    async def events(self) -> AsyncIterator[Event]:
        """first_token, chunk*, latency, done (or error then done); the completion is durable before done."""
        stream = self._responder.stream(self._ask.messages)
        try:
            while True:
                try:
                    delta = await self._next_or_stop(stream)
                except StopAsyncIteration:
                    self.finish_reason = FINISH_STOP
                    break
                if not delta:
                    continue
                if self._first_token_ms is None:
                    self._first_token_ms = self._since_start_ms()
                    self._telemetry_signal("first_token", {"latency_ms": self._first_token_ms})
                    yield "first_token", {"type": "first_token", "latency_ms": self._first_token_ms}
                self._parts.append(delta)
                yield "chunk", {"type": "chunk", "index": len(self._parts) - 1, "delta": delta}
        except ResponderError as exc:
            self.finish_reason = FINISH_ERROR
            logger.bind(interaction_id=str(self.interaction_id), code=exc.code).warning(
                "responder failed: {}", exc
            )
            yield "error", {"type": "error", "code": exc.code, "message": exc.message}
        except _Stopped:
            self.finish_reason = FINISH_SHUTDOWN
            yield (
                "error",
                {"type": "error", "code": FINISH_SHUTDOWN, "message": "the server is shutting down"},
            )
        except Exception:
            # A responder bug must still end the stream (error, then done) and complete the interaction;
            # left to the middleware, the client would wait on an open stream that never ends.
            self.finish_reason = FINISH_ERROR
            logger.bind(interaction_id=str(self.interaction_id), code="responder_failed").exception(
                "responder crashed"
            )
            yield (
                "error",
                {"type": "error", "code": "responder_failed", "message": "the reply could not be produced"},
            )
        finally:
            await stream.aclose()
        total_ms = self._since_start_ms()
        yield (
            "latency",
            {
                "type": "latency",
                "stage": "ttlc",
                "at": _epoch_ms(),
                "sinceStartMs": total_ms,
                "first_token_latency_ms": self._first_token_ms,
                "total_latency_ms": total_ms,
            },
        )
        if not await self.complete(self.finish_reason or FINISH_STOP):
            self.finish_reason = FINISH_ERROR
            yield (
                "error",
                {
                    "type": "error",
                    "code": ERROR_COMPLETION_DEFERRED,
                    "message": "the reply could not be recorded yet; it will be once the database is back",
                },
            )
        yield "done", self._done(total_ms)

    async def _next_or_stop(self, stream: AsyncIterator[str]) -> str:
        """The responder's next piece, read in this task; `_Stopped` when a stop came before or during it."""
        if self._stopping:
            raise _Stopped
        task = asyncio.current_task()
        assert task is not None
        self._reading = task
        try:
            piece = await anext(stream)
        except asyncio.CancelledError:
            # Ours alone (uncancel leaves no other request) is a stop; any other cancel goes on up.
            if self._stopping and task.uncancel() == 0:
                raise _Stopped from None
            raise
        finally:
            self._reading = None
        if self._stopping:
            # A responder that swallowed the stop's cancel: take the request back, and stop all the same.
            task.uncancel()
            raise _Stopped
        return piece

    def _usage(self) -> tuple[int, int]:
        tokens_in = sum(estimate_tokens(message.content) for message in self._ask.messages)
        return tokens_in, estimate_tokens(self.content)

    @property
    def content(self) -> str:
        return "".join(self._parts)

    def _done(self, total_ms: int) -> dict[str, Any]:
        tokens_in, tokens_out = self._usage()
        content = self.content
        timings = {"first_token_latency_ms": self._first_token_ms, "total_latency_ms": total_ms}
        return {
            "type": "done",
            "interaction_id": str(self.interaction_id),
            "content": content,
            "index": len(self._parts),
            "at": _epoch_ms(),
            "sinceStartMs": self._since_start_ms(),
            "timings": timings,
            "meta": {
                # The ECO app takes the id for its own signals from here, and from nowhere else.
                "interaction_id": str(self.interaction_id),
                "finishReason": self.finish_reason,
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
                # The ECO app posts a module usage for each module named here, in this order.
                "module_combo": self._row.module_combo,
            },
            "payload": {
                "content": content,
                "interaction_id": str(self.interaction_id),
                "tokens": {"in": tokens_in, "out": tokens_out},
                "module_combo": self._row.module_combo,
                "timings": timings,
                "at": datetime.now(UTC).isoformat(),
                "sinceStartMs": self._since_start_ms(),
            },
        }

    async def complete(self, finish_reason: str) -> bool:
        """Record how the interaction ended, once: True when it is durable, False when the outbox was down and
        it is held for a retry. Shielded: a cancelled handler still completes it."""
        if self._completion is None:
            self.finish_reason = self.finish_reason or finish_reason
            self._completion = asyncio.ensure_future(self._deferred.write(self._completion_events()))
        return await asyncio.shield(self._completion)

    def failure(self, code: str, message: str) -> list[Event]:
        """The stream's last two frames after a failure the run itself did not catch: error, then done."""
        self.finish_reason = FINISH_ERROR
        error = {"type": "error", "code": code, "message": message}
        return [("error", error), ("done", self._done(self._since_start_ms()))]

    def _completion_events(self) -> list[OutboxEvent]:
        total_ms = self._since_start_ms()
        tokens_in, tokens_out = self._usage()
        chunks = len(self._parts)
        self._telemetry_signal(
            "done",
            {
                "finish_reason": self.finish_reason,
                "chunks": chunks,
                "bytes": len(self.content.encode("utf-8")),
                "first_token_latency_ms": self._first_token_ms,
                "total_latency_ms": total_ms,
            },
        )
        meta = {
            **self._row.meta,
            "finish_reason": self.finish_reason,
            "first_token_latency_ms": self._first_token_ms,
            "chunks": chunks,
        }
        row = replace(self._row, tokens_in=tokens_in, tokens_out=tokens_out, latency_ms=total_ms, meta=meta)
        return [completion_event(row), *self._telemetry]


class InteractionRegistry:
    """The runs in flight, so that shutdown can end their streams with a final event."""

    def __init__(self) -> None:
        self._runs: set[InteractionRun] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, run: InteractionRun) -> None:
        self._runs.add(run)
        self._empty.clear()

    def discard(self, run: InteractionRun) -> None:
        self._runs.discard(run)
        if not self._runs:
            self._empty.set()

    async def stop_all(self, timeout_s: float) -> None:
        for run in list(self._runs):
            run.request_stop()
        try:
            async with asyncio.timeout(timeout_s):
                await self._empty.wait()
        except TimeoutError:
            logger.warning("{} streams still open after {} s of shutdown", len(self._runs), timeout_s)
