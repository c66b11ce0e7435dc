"""Reading a JSON body safely: content type, size, syntax, and text Postgres can store.

Checked here, once, before any schema: a NUL or a lone surrogate would be rejected by Postgres only when the
row is written, NaN and Infinity are not JSON, and a body nested thousands deep overflows the parser (a 422,
like any nesting beyond the limits).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from service.http.errors import ApiError, validation_failed
from service.keys import CONFIG

JSON_TYPES = ("application/json",)
BEACON_TYPES = ("application/json", "text/plain")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


# Built once: json.loads given options builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", "the body is not UTF-8") from exc
    if not text.strip():
        raise ApiError(400, "malformed_json", "the body is empty")
    try:
        if text.startswith("\ufeff"):
            # What json.loads says of it; the decoder alone would call it an unexpected value.
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except RecursionError as exc:
        # Valid JSON, only deeper than any limit allows: a limit violation (422), as a shallower excess is.
        raise validation_failed({"_schema": ["nested too deeply"]}) from exc
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc


def text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def _walk(value: Any, path: str) -> Iterable[tuple[str, str]]:
    # Iterative, so a deep (but parseable) document cannot exhaust the stack here either.
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                yield where, problem
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = text_problem(key)
                if problem:
                    yield where, f"key {problem}"
                stack.append((child, where))
        elif isinstance(item, list):
            stack.extend((child, where) for child in item)


def check_text(document: Any) -> None:
    """422 for any string (key or value) that Postgres cannot store, named by its top-level field."""
    errors: dict[str, list[str]] = {}
    if isinstance(document, dict):
        parts: Iterable[tuple[Any, str]] = ((v, str(k)) for k, v in document.items())
        for key in document:
            problem = text_problem(key)
            if problem:
                errors.setdefault("_schema", []).append(f"field name {problem}")
    elif isinstance(document, list):
        parts = ((v, str(i)) for i, v in enumerate(document))
    else:
        parts = [(document, "_schema")]
    for value, name in parts:
        for where, problem in _walk(value, name):
            if problem not in errors.setdefault(where, []):
                errors[where].append(problem)
    if errors:
        raise validation_failed(errors)


async def read_json(request: web.Request, max_bytes: int, content_types: tuple[str, ...] = JSON_TYPES) -> Any:
    """The parsed body, or the matching 4xx: 415 wrong type, 413 too large, 400 malformed, 422 bad text."""
    if request.content_type not in content_types:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be one of: {', '.join(content_types)}",
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    content = request.content
    if content.is_eof():
        # The whole body came with the head (a signal's does): nothing is left to wait for, so no deadline.
        body = content.read_nowait()
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    else:
        body = await _read_body(request, max_bytes)
    document = parse_json(body)
    # Strict UTF-8 and the JSON parser already refuse raw NULs and surrogates: only a \u escape can carry
    # one, so a body without any is not walked (the common case, at thousands of requests a second).
    if b"\\u" in body:
        check_text(document)
    return document


async def _read_body(request: web.Request, max_bytes: int) -> bytes:
    body = bytearray()
    timeout_s = request.app[CONFIG].body_timeout_s
    try:
        # One deadline for the whole body: a client trickling a byte at a time holds the handler no longer.
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.read(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise _too_large(max_bytes)
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body did not arrive within {timeout_s:g} s", close=True
        ) from None
    return bytes(body)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body exceeds {max_bytes} bytes")
