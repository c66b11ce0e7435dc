"""The states an outbox row goes through (outbox/sql/schema.sql holds the table)."""

from __future__ import annotations

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
