"""Errors the outbox raises to its callers."""

from __future__ import annotations

import psycopg2


class DatabaseUnavailable(Exception):
    """The database could not be reached or dropped the connection; the caller may retry later."""


# psycopg2 raises OperationalError for refused or broken connections and InterfaceError for closed ones;
# aiopg raises TimeoutError when a connect or query outlives its timeout.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    TimeoutError,
)
