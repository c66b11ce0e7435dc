"""Running SQLAlchemy Core statements on aiopg: compile once with the psycopg2 dialect, execute the string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

_DIALECT = postgresql.psycopg2.dialect()


@dataclass(frozen=True)
class Compiled:
    """A statement compiled once at import, with the literal parameters SQLAlchemy bound for it."""

    sql: str
    params: dict[str, Any]

    def bind(self, **params: Any) -> dict[str, Any]:
        return {**self.params, **params}


def compile_statement(stmt: ClauseElement) -> Compiled:
    compiled = stmt.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    return Compiled(compiled.string, dict(compiled.params))
