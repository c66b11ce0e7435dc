"""The identity headers, checked in one place for every route: headers are client input too.

aiohttp decodes a header's raw bytes as UTF-8 with `surrogateescape`, so a byte that is not UTF-8 reaches a
handler as a lone surrogate, which psycopg2 (and any UTF-8 writer) cannot encode. Every header below is
checked before any handler reads it: UTF-8, no control characters, a length cap, and a uuid where it is an
id. A bad one is a 422 naming the header.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from service.chat.schemas import CLIENT_MESSAGE_ID_MAX_CHARS, ECO_ID_MAX_CHARS
from service.http.errors import validation_failed
from service.target.rows import is_local_reply_id

HEADER_INTERACTION_ID = "X-Eco-Interaction-Id"
HEADER_IDEMPOTENCY_KEY = "Idempotency-Key"
HEADER_GUEST_ID = "X-Eco-Guest-Id"
HEADER_SESSION_ID = "X-Eco-Session-Id"
HEADER_CLIENT_MESSAGE_ID = "X-Eco-Client-Message-Id"
HEADER_USER_ID = "X-Eco-User-Id"
HEADER_STREAM_ID = "X-Stream-Id"
HEADER_LAST_EVENT_ID = "Last-Event-Id"
# Sent by the ECO production app (its buildIdentityHeaders, and feedback's X-Guest-Id); allowed, not read.
HEADER_CLIENT_ID = "X-Client-Id"
HEADER_BIAS_HINT = "X-Eco-Bias-Hint"
HEADER_PLAIN_GUEST_ID = "X-Guest-Id"
HEADER_PLAIN_SESSION_ID = "X-Session-Id"
HEADER_REQUESTED_WITH = "X-Requested-With"
# A bearer JWT from the ECO app runs to a few KiB; aiohttp caps a header line at 8190 bytes anyway.
AUTHORIZATION_MAX_CHARS = 8192

# C0 and C1 controls, DEL, and the lone surrogates that stand for bytes that were not UTF-8.
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class HeaderRule:
    max_chars: int
    is_uuid: bool = False
    # The ECO app's local reply id (`eco-<uuid>`) stands where a uuid is not known yet.
    or_local_reply_id: bool = False


IDENTITY_HEADERS: dict[str, HeaderRule] = {
    HEADER_GUEST_ID: HeaderRule(ECO_ID_MAX_CHARS),
    HEADER_SESSION_ID: HeaderRule(ECO_ID_MAX_CHARS),
    HEADER_CLIENT_MESSAGE_ID: HeaderRule(CLIENT_MESSAGE_ID_MAX_CHARS),
    # Not a uuid is dropped, like the body's user id, rather than refused.
    HEADER_USER_ID: HeaderRule(ECO_ID_MAX_CHARS),
    HEADER_STREAM_ID: HeaderRule(ECO_ID_MAX_CHARS),
    HEADER_INTERACTION_ID: HeaderRule(ECO_ID_MAX_CHARS, is_uuid=True, or_local_reply_id=True),
    HEADER_IDEMPOTENCY_KEY: HeaderRule(ECO_ID_MAX_CHARS, is_uuid=True),
    "Authorization": HeaderRule(AUTHORIZATION_MAX_CHARS),
}


def header_problem(value: str, rule: HeaderRule) -> str | None:
    """Why `value` cannot be used, or None."""
    if _NOT_PRINTABLE.search(value):
        if re.search(r"[\ud800-\udfff]", value):
            return "must be UTF-8 text"
        return "must not contain control characters"
    if len(value) > rule.max_chars:
        return f"longer than {rule.max_chars} characters"
    if rule.is_uuid and value.strip() and not (rule.or_local_reply_id and is_local_reply_id(value.strip())):
        try:
            uuid.UUID(value.strip())
        except ValueError:
            return "Not a valid UUID."
    return None


def check_headers(request: web.Request) -> None:
    """422 for the first identity header that cannot be used, whatever the route."""
    for name, rule in IDENTITY_HEADERS.items():
        for value in request.headers.getall(name, ()):
            if problem := header_problem(value, rule):
                raise validation_failed({name: [problem]})


def header_uuid(request: web.Request, name: str) -> str | None:
    """The uuid a (checked) header carries, normalised; None when absent or blank."""
    raw = request.headers.get(name, "").strip()
    return str(uuid.UUID(raw)) if raw else None


def header_interaction_ref(request: web.Request, name: str) -> str | None:
    """A (checked) header that holds a uuid, normalised, or the app's local reply id as it is."""
    raw = request.headers.get(name, "").strip()
    if is_local_reply_id(raw):
        return raw
    return str(uuid.UUID(raw)) if raw else None


def header_text(request: web.Request, name: str) -> str | None:
    """A (checked) text header, stripped; None when absent or blank."""
    return request.headers.get(name, "").strip() or None


class MalformedRequestFilter(logging.Filter):
    """aiohttp's parser refuses some header bytes itself (a control character, a line too long) with a 400,
    and logs each one as an ERROR with a traceback: the client's mistake, not ours. Kept as one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.msg, record.args = "malformed request refused with %s: %s", (exc.code, exc.message)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


MALFORMED_REQUEST_FILTER = MalformedRequestFilter()


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger (once, however many apps are built)."""
    logging.getLogger("aiohttp.server").addFilter(MALFORMED_REQUEST_FILTER)
