"""The outbox's admin answers as JSON documents: the admin endpoints and the command line print the same.
Both front ends use them and the command line needs no HTTP edge: they sit beside the config, above both."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from outbox.admin import DeadLetter, KindStats


def stats_document(rows: list[KindStats]) -> dict[str, Any]:
    document: dict[str, Any] = {"pending": {}, "dead": {}}
    for row in rows:
        document[row.state][row.kind] = {"rows": row.rows, "oldest_age_s": round(row.oldest_age_s, 3)}
    document["pending_total"] = sum(entry["rows"] for entry in document["pending"].values())
    document["dead_total"] = sum(entry["rows"] for entry in document["dead"].values())
    return document


def dead_letter_document(letter: DeadLetter) -> dict[str, Any]:
    document = asdict(letter)
    # The outbox groups an interaction's rows under its id.
    document["interaction_id"] = document.pop("group_key")
    document["created_at"] = letter.created_at.isoformat()
    document["dead_at"] = letter.dead_at.isoformat() if letter.dead_at else None
    return document
