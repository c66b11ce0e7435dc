"""The engine's statements (outbox/sql/queries.sql), loaded once for each set of names it is given."""

from __future__ import annotations

import functools
from pathlib import Path

from outbox.names import OutboxNames
from outbox.sql import Statements

QUERIES_SQL = Path(__file__).with_name("sql") / "queries.sql"


@functools.cache
def queries(names: OutboxNames) -> Statements:
    return Statements(QUERIES_SQL, names.identifiers)
