"""What serves is install_requires; the embedded database is an extra, and its absence is said plainly."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import PROJECT_DIR
from service.store.embedded import start_embedded_postgres


def test_without_the_embedded_extra_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    with pytest.raises(RuntimeError, match="DATABASE_URL.*`embedded` extra"):
        start_embedded_postgres(tmp_path)


def test_the_clients_and_the_embedded_database_are_extras() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(PROJECT_DIR / "setup.cfg")
    serving = cfg["options"]["install_requires"]
    for package in ("embedded-postgres", "httpx", "py-spy", "pytest", "ruff", "import-linter"):
        assert package not in serving
    extras = cfg["options.extras_require"]
    assert "embedded-postgres" in extras["embedded"] and "httpx-sse" in extras["cli"]


def test_what_serves_needs_no_sqlalchemy() -> None:
    """SQLAlchemy is in the test extra only for the previous release that tests/test_rolling_upgrade.py serves
    from git history: this release's code must import without it."""
    blocked = "import sys; sys.modules['sqlalchemy'] = None"
    code = f"{blocked}; import service.__main__, service.app, service.cli.admin"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_DIR, env=env, timeout=60)
