"""Errors the outbox raises to its callers, and the classes of failure the relay and the loops act on."""

from __future__ import annotations

import asyncio
import enum

import psycopg2
import psycopg2.extensions


class DatabaseUnavailable(Exception):
    """The database could not be reached or dropped the connection; the caller may retry later."""


# psycopg2 raises OperationalError for refused or broken connections and InterfaceError for closed ones;
# aiopg raises TimeoutError when a connect or query outlives its timeout.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    TimeoutError,
)


class Failure(enum.StrEnum):
    """What a failed statement says about the rows it carried."""

    # The database is unreachable, the session was lost or the statement interrupted: no row is at fault.
    OUTAGE = "outage"
    # The target refuses these rows (a constraint, a value, a size): other rows of the batch may pass.
    REFUSED = "refused"
    # Every row would fail (missing table, permission, schema mismatch): someone must fix the target.
    NOT_READY = "not_ready"
    # Not a database's error, nor a connection's (a KeyError, a TypeError): a bug, or a row the code cannot
    # handle. Never an outage: retrying the batch as it is would fail the same way, forever.
    INTERNAL = "internal"


# psycopg2 raises OperationalError for 54000 (index row too large) too: the class is in the SQLSTATE only.
_REFUSED_CLASSES = ("21", "22", "23", "44", "54")
_REFUSED_CODES = frozenset({"P0001"})
# 23503 (foreign key) is a parent missing: the deliverer holds those rows as waiting, never refused.
_NOT_REFUSED_CODES = frozenset({"23503"})
# Class 08 (connection), 57P0x (admin/crash shutdown, database dropped, idle session timeout), 57014 (a
# statement cancelled by pg_cancel_backend or statement_timeout), 25P03 (idle-in-transaction timeout),
# 40 (serialization, deadlock), 53 (out of resources), 55P03 (lock timeout): retried as they are.
_OUTAGE_CLASSES = ("08", "40", "53", "57P0")
_OUTAGE_CODES = frozenset({"57014", "25P03", "55P03"})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg2 error, or of the query cancel that aiopg turned into CancelledError."""
    if isinstance(exc, psycopg2.Error):
        return exc.pgcode or None
    if isinstance(exc, asyncio.CancelledError) and isinstance(
        exc.__context__, psycopg2.extensions.QueryCanceledError
    ):
        return exc.__context__.pgcode or "57014"
    return None


# Raised without a SQLSTATE when a connection is refused, broken, closed or timed out, or a query interrupted.
_OUTAGE_EXCEPTIONS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, OSError, asyncio.CancelledError)


def classify(exc: BaseException) -> Failure:
    """Decide by SQLSTATE, not by exception class: psycopg2 maps several row errors to OperationalError."""
    code = sqlstate(exc)
    if code is None:
        # A closed connection, a timeout, a server gone mid-query: nothing the rows did. Anything else
        # without a SQLSTATE is ours.
        return Failure.OUTAGE if isinstance(exc, _OUTAGE_EXCEPTIONS) else Failure.INTERNAL
    if code in _OUTAGE_CODES or code.startswith(_OUTAGE_CLASSES):
        return Failure.OUTAGE
    if code not in _NOT_REFUSED_CODES and (code in _REFUSED_CODES or code.startswith(_REFUSED_CLASSES)):
        return Failure.REFUSED
    return Failure.NOT_READY


def describe(exc: BaseException) -> str:
    """SQLSTATE and the server's first message line, as `last_error` and /readyz show them."""
    code = sqlstate(exc)
    source = (exc.__context__ or exc) if isinstance(exc, asyncio.CancelledError) else exc
    message = (str(source).strip().splitlines() or [source.__class__.__name__])[0]
    return f"{code}: {message}" if code else f"{exc.__class__.__name__}: {message}"


def server_cancelled(exc: asyncio.CancelledError) -> bool:
    """True when the cancel came from the server (pg_cancel_backend, statement_timeout), not from our code.

    aiopg's Connection._poll raises a bare CancelledError for psycopg2's QueryCanceledError (raised inside
    its `except`, so the QueryCanceledError is its __context__). A real cancel of the task leaves the task
    cancelling(); a server-side one does not, and the loop that got it must go on.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return False
    return isinstance(exc.__context__, psycopg2.extensions.QueryCanceledError)
