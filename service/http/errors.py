"""Error answers: JSON with a stable `error` code and a message, never a stack trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import ValidationError


class ApiError(Exception):
    """An error answer with a code and message the client can act on."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        # Close the connection after the answer: what is left of the request cannot be trusted or read.
        self.close = close
        self.error = error
        self.message = message
        self.details = details


def validation_failed(details: Mapping[str, Any]) -> ApiError:
    return ApiError(422, "validation_failed", "the request does not match the schema", details=details)


def code_for(exc: web.HTTPException) -> str:
    return (exc.reason or "error").lower().replace(" ", "_").replace("-", "_")


def error_response(
    status: int,
    error: str,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers)


def details_of(exc: ValidationError) -> dict[str, Any]:
    messages = exc.messages
    if isinstance(messages, dict):
        return {str(key): value for key, value in messages.items()}
    return {"_schema": messages}
