"""The outbox table as SQLAlchemy Core sees it: used only to build statements (sql/ holds the DDL)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID

CHANNEL = "eco_outbox"

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("key", UUID(as_uuid=False), nullable=False),
    Column("group_key", UUID(as_uuid=False), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("dedupe_key", Text),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Column("dead_at", DateTime(timezone=True)),
    Column("last_error", Text),
    schema="eco_outbox",
)

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
