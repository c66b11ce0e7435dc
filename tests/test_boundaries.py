"""The package boundaries hold: CI runs only `make test`, so the import-linter contracts in setup.cfg (the
engine imports no service, the service's layers, no cycles) are checked here too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from service.config import PROJECT_DIR


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(PROJECT_DIR / "setup.cfg")],
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_the_engine_names_no_target() -> None:
    """No ECO table, column or kind in the engine: it is handed its target when it is built."""
    words = ("analytics", "interaction", "signal", "eco_interactions", "eco_passive")
    found = [
        f"{path.relative_to(PROJECT_DIR)}: {word}"
        for path in sorted((PROJECT_DIR / "outbox").glob("*.py"))
        for word in words
        if word in path.read_text(encoding="utf-8").lower()
    ]
    assert found == []
