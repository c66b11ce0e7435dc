"""The bench's one table: each measurement, this service beside the baseline, against its target."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    measurement: str
    ours: str
    baseline: str
    target: str
    met: bool | None


HEADER = ("measurement", "eco-outbox", "baseline", "target", "met")


def number(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def pair(first: float, second: float) -> str:
    return f"{number(first, 1)} / {number(second, 1)}"


def render(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    """A Markdown table, so that it pastes into the README as it is."""
    cells = [HEADER] + [
        (row.measurement, row.ours, row.baseline, row.target, {True: "yes", False: "NO", None: ""}[row.met])
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]

    def line(values: Sequence[str]) -> str:
        return (
            "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths, strict=True)) + " |"
        )

    out = [title, "", line(cells[0]), "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    out += [line(values) for values in cells[1:]]
    out += [""] + [f"- {note}" for note in notes]
    return "\n".join(out)
