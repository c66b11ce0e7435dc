"""Named SQL statements read from a `.sql` file: one `-- name: <name>` section per statement.

The identifiers a statement names (`{schema}`, `{table}`, `{channel}`) are put in once, when the file is
loaded, and only after they are checked to be plain identifiers; values are psycopg2 parameters
(`%(name)s`), bound per call. Full-line comments stay in the file, for its readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# Lower case, unquoted, within PostgreSQL's 63 bytes: safe to put into a statement as it is.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SECTION = re.compile(r"^--\s*name:\s*(?P<name>\w+)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(?P<name>\w+)\}")


def identifier(value: str) -> str:
    """`value`, once it is known to be a plain identifier."""
    if not _IDENTIFIER.match(value):
        raise ValueError(f"not a plain SQL identifier (lower case letters, digits, _): {value!r}")
    return value


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str


class Statements(Mapping[str, Statement]):
    """The statements of one file, by name."""

    def __init__(self, path: Path, identifiers: Mapping[str, str]) -> None:
        checked = {key: identifier(value) for key, value in identifiers.items()}
        self._path = path
        self._statements = {
            name: Statement(name, _substituted(body, checked, f"{path.name}: {name}"))
            for name, body in _sections(path.read_text(encoding="utf-8"), path.name)
        }

    def __getitem__(self, name: str) -> Statement:
        try:
            return self._statements[name]
        except KeyError:
            raise KeyError(f"{self._path.name} has no statement named {name!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._statements)

    def __len__(self) -> int:
        return len(self._statements)


def script(path: Path, identifiers: Mapping[str, str]) -> str:
    """A whole file of statements (a schema), its identifiers checked and put in."""
    checked = {key: identifier(value) for key, value in identifiers.items()}
    return _substituted(path.read_text(encoding="utf-8"), checked, path.name)


def _sections(text: str, where: str) -> list[tuple[str, str]]:
    headers = list(_SECTION.finditer(text))
    sections: list[tuple[str, str]] = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        lines = [line for line in text[header.end() : end].splitlines() if not line.lstrip().startswith("--")]
        body = "\n".join(lines).strip().removesuffix(";").strip()
        if not body:
            raise ValueError(f"{where}: statement {header['name']} is empty")
        sections.append((header["name"], body))
    names = [name for name, _ in sections]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: a statement name is used twice: {sorted(names)}")
    return sections


def _substituted(sql: str, identifiers: Mapping[str, str], where: str) -> str:
    def put(match: re.Match[str]) -> str:
        if match["name"] not in identifiers:
            raise ValueError(f"{where}: no identifier given for {{{match['name']}}}")
        return identifiers[match["name"]]

    return _PLACEHOLDER.sub(put, sql)
