"""The optional dependencies (setup.cfg's extras): a missing one is one line naming what to install."""

from __future__ import annotations


class MissingExtra(RuntimeError):
    """A command needs a package of an extra that is not installed."""

    def __init__(self, extra: str, purpose: str, module: str | None) -> None:
        super().__init__(
            f"{purpose} needs the `{extra}` extra ({module or 'a package of it'} is not installed):"
            f" `make run` installs it"
        )
