"""What the engine delivers to, handed in when it is built: the kinds in delivery order, each with the async
function that writes a batch of its rows, and the kinds that wait on a parent kind of the same group.

The engine knows no target table: a deliverer gets the rows' keys and their JSON payloads, writes them in the
target transaction the relay opened, and says which it wrote, which wait and which the target refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiopg import Cursor

# A held reason: the row's parent is not in the target yet. The relay then asks the outbox where the parent
# is, and releases the row as soon as a parent of its group is delivered.
PARENT_MISSING = "parent_missing"


@dataclass
class DeliveryResult:
    """Keys written (or found already written), keys held back (waiting) and keys the target refused, with
    the reason for each: `PARENT_MISSING` or another reason, or the SQLSTATE and message of the refusal."""

    delivered: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def merged(self, other: DeliveryResult) -> DeliveryResult:
        return DeliveryResult(
            self.delivered | other.delivered, {**self.held, **other.held}, {**self.refused, **other.refused}
        )


Deliverer = Callable[[Cursor, Sequence[str], Sequence[str]], Awaitable[DeliveryResult]]


@dataclass(frozen=True)
class Target:
    """`deliverers` maps each kind to its writer, in delivery order (parents first, so a batch that holds
    both finds the parents in place). `waits_on` maps a child kind to the parent kinds it waits on: rows of
    one group share a `group_key`, a parent's being its own key."""

    deliverers: Mapping[str, Deliverer]
    waits_on: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The names a held row's group and key carry in the relay's log lines, in the target's own words.
    log_fields: tuple[str, str] = ("group_key", "key")
    # Rows may be filed under an alias of their group, a key the client had before the group's own: a row
    # of `alias_kind` keyed by the alias names the group (outbox.aliases). A deliverer holds a row whose
    # alias no such row has named yet with `unresolved_reason`; it dies with it, like any held row.
    alias_kind: str | None = None
    unresolved_reason: str = "unresolved_alias"
    # By kind, the payload fields (dotted paths) a delivered row's status still shows: a delivered row leaves
    # the outbox's table, and its log keeps only these of its payload.
    status_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds = set(self.deliverers)
        if self.alias_kind is not None and self.alias_kind not in kinds:
            raise ValueError(f"alias_kind names a kind without a deliverer: {self.alias_kind}")
        for child, parents in self.waits_on.items():
            if child not in kinds or not parents <= kinds:
                raise ValueError(f"waits_on names a kind without a deliverer: {child} -> {sorted(parents)}")

    @property
    def status_paths(self) -> tuple[list[str], list[str]]:
        """`status_fields` as two parallel lists (kinds, paths), as the statement takes them."""
        pairs = [(kind, path) for kind, paths in self.status_fields.items() for path in paths]
        return [kind for kind, _ in pairs], [path for _, path in pairs]

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(self.deliverers)

    @property
    def child_kinds(self) -> list[str]:
        return sorted(self.waits_on)

    @property
    def parent_kinds(self) -> list[str]:
        return sorted(set().union(*self.waits_on.values()))
