"""The ECO target's statements (service/target/sql/queries.sql), loaded once, by name."""

from __future__ import annotations

from pathlib import Path

from outbox.sql import Statements

TARGET_QUERIES = Statements(Path(__file__).with_name("sql") / "queries.sql", {})
