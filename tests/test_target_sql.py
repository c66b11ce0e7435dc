"""The target's statements and its rows agree: the interaction's columns the SQL file lists are the fields of
InteractionRow, in order and with their types."""

from __future__ import annotations

import re

import pytest

from service.target.queries import TARGET_QUERIES
from service.target.rows import INTERACTION_COLUMNS


def _words(text: str) -> list[str]:
    return " ".join(text.split()).split(", ")


@pytest.mark.parametrize("name", ["insert_interactions", "upsert_completions"])
def test_the_interaction_statements_list_the_rows_columns(name: str) -> None:
    sql = TARGET_QUERIES[name].sql
    inserted = re.search(r"INSERT INTO analytics\.eco_interactions \((?P<columns>[^)]*)\)", sql)
    record = re.search(r"AS r\((?P<record>.*?)\)\n", sql, re.DOTALL)
    assert inserted is not None and record is not None, sql
    assert _words(inserted["columns"]) == list(INTERACTION_COLUMNS)
    assert _words(record["record"]) == [
        f"{column} {sql_type}" for column, sql_type in INTERACTION_COLUMNS.items()
    ]
