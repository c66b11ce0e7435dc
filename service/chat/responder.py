"""Where the reply comes from: an offline responder by default, or an OpenAI-compatible streaming backend."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from service.config import Config


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


class ResponderError(Exception):
    """The backend failed; `code` goes to the client in the SSE `error` event, never a stack trace."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Responder(Protocol):
    name: str
    # The modules that shape its replies: `done` names them as `module_combo`, as the ECO backend did.
    modules: tuple[str, ...]

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply in pieces as they are produced."""
        ...


def estimate_tokens(text: str) -> int:
    """About four characters a token, as OpenAI's rule of thumb; only used when the backend reports none."""
    return max(1, (len(text) + 3) // 4) if text else 0


OFFLINE_SENTENCES = (
    "Obrigado por compartilhar isso comigo.",
    "Vamos olhar para isso com calma, um passo de cada vez.",
    "O que você sente agora faz sentido diante do que viveu.",
    "Se quiser, me conte um pouco mais sobre o que mais pesa neste momento.",
)


class OfflineResponder:
    """A deterministic reply built from the prompt, streamed a few words at a time, with no network."""

    name = "offline"
    modules = (name,)

    def __init__(self, chunk_delay_ms: float = 10.0, words_per_chunk: int = 3) -> None:
        self._delay_s = chunk_delay_ms / 1000
        self._words_per_chunk = words_per_chunk

    def reply_for(self, prompt: str) -> str:
        digest = hashlib.sha256(prompt.encode("utf-8")).digest()
        excerpt = " ".join(prompt.split()[:12])
        picked = [OFFLINE_SENTENCES[(digest[i] + i) % len(OFFLINE_SENTENCES)] for i in range(2)]
        return f"Olá! Você disse: “{excerpt}”. " + " ".join(dict.fromkeys(picked))

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        words = self.reply_for(messages[-1].content if messages else "").split(" ")
        for start in range(0, len(words), self._words_per_chunk):
            if self._delay_s:
                await asyncio.sleep(self._delay_s)
            piece = " ".join(words[start : start + self._words_per_chunk])
            yield piece if start == 0 else " " + piece


class OpenAIResponder:
    """Streams from an OpenAI-compatible `/chat/completions` endpoint (`stream: true`, `data:` lines).

    Every failure becomes a `ResponderError` with a stable code, so the client gets an SSE `error` event and
    never a stack trace: the status, a malformed or truncated stream, an unreachable host, a stall.
    """

    name = "openai"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        modules: tuple[str, ...] = (),
    ) -> None:
        self.modules = modules or (self.name,)
        self._session = session
        self._url = url.rstrip("/")
        if not self._url.endswith("/chat/completions"):
            self._url += "/chat/completions"
        self._api_key = api_key
        self._model = model
        # The whole reply may take long; what must not is the connect, nor the wait for each next piece.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        headers = {aiohttp.hdrs.ACCEPT: "text/event-stream"}
        if self._api_key:
            headers[aiohttp.hdrs.AUTHORIZATION] = f"Bearer {self._api_key}"
        body = {
            "model": self._model,
            "stream": True,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        try:
            async with self._session.post(
                self._url, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    raise _status_error(resp.status)
                if resp.content_type == "application/json":
                    # A backend that ignores `stream: true` answers with the whole completion at once.
                    yield _message_content(await resp.read())
                    return
                async for piece in _openai_deltas(resp.content):
                    yield piece
        except TimeoutError as exc:
            raise ResponderError("upstream_timeout", "the language model did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise ResponderError("upstream_unreachable", "the language model could not be reached") from exc
        except (HttpProcessingError, ValueError) as exc:
            # aiohttp's reader refuses a line longer than its buffer (LineTooLong) or a broken HTTP message.
            raise ResponderError("upstream_malformed", "the language model sent a malformed event") from exc


def _status_error(status: int) -> ResponderError:
    if status in (401, 403):
        return ResponderError("upstream_auth", f"the language model refused the credentials (HTTP {status})")
    if status == 429:
        return ResponderError("upstream_rate_limited", "the language model is rate limiting (HTTP 429)")
    return ResponderError("upstream_status", f"the language model answered HTTP {status}")


def _malformed() -> ResponderError:
    return ResponderError("upstream_malformed", "the language model sent a malformed event")


def _decode(data: str | bytes) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _malformed() from exc
    if not isinstance(event, dict):
        raise _malformed()
    if "error" in event:
        raise ResponderError("upstream_error", "the language model reported an error")
    return event


def _choices(event: dict[str, Any]) -> list[dict[str, Any]]:
    choices = event.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise _malformed()
    return choices


def _message_content(raw: bytes) -> str:
    for choice in _choices(_decode(raw)):
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return message["content"]
    raise _malformed()


def _deltas(event: dict[str, Any]) -> tuple[list[str], bool]:
    """The text pieces of one chunk, and whether it carries a finish_reason."""
    pieces: list[str] = []
    finished = False
    for choice in _choices(event):
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _malformed()
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise _malformed()
        if content:
            pieces.append(content)
        finished = finished or bool(choice.get("finish_reason"))
    return pieces, finished


async def _openai_deltas(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Parse the SSE body: `data:` lines (one event may span several), a blank line ends an event, and
    `data: [DONE]` ends the stream. A stream cut off before [DONE] or a finish_reason is an error."""
    data_lines: list[str] = []
    finished = False
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line:
            field, _, value = line.partition(":")
            if field == "data":
                data_lines.append(value[1:] if value.startswith(" ") else value)
            continue
        if not data_lines:
            continue
        data, data_lines = "\n".join(data_lines), []
        if data.strip() == "[DONE]":
            return
        pieces, done = _deltas(_decode(data))
        finished = finished or done
        for piece in pieces:
            yield piece
    if data_lines and "\n".join(data_lines).strip() == "[DONE]":
        return
    if not finished:
        raise ResponderError("upstream_truncated", "the language model's stream ended before it finished")


def build_responder(config: Config, session: aiohttp.ClientSession | None) -> Responder:
    if config.llm_url and session is not None:
        return OpenAIResponder(
            session,
            config.llm_url,
            config.llm_api_key,
            config.llm_model,
            config.llm_timeout_s,
            config.llm_modules,
        )
    return OfflineResponder(config.offline_chunk_delay_ms)
