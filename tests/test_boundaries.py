"""The package boundaries hold: CI runs only `make test`, so the import-linter contracts in setup.cfg (the
engine imports no service, the service's layers, no cycles) are checked here too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from service.config import PROJECT_DIR
from service.target.rows import Kind


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
    """No word of the application in the engine: in no file under outbox/ (its code, its statements, its
    schema and migrations, whatever comes next) and in no file's name; no ECO name, no target table or
    column, no kind of the target. The names it works under are handed to it (OutboxNames, Ledger), as its
    target is. Only what Python compiles there (__pycache__) is passed over: it holds the checkout's path."""
    words = {"analytics", "eco_interactions", "eco_passive", *(str(kind) for kind in Kind)}
    pattern = re.compile(r"\beco(?:_|\b)|" + "|".join(sorted(map(re.escape, words))), re.IGNORECASE)
    engine = PROJECT_DIR / "outbox"
    files = [p for p in sorted(engine.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    assert {p.suffix for p in files} >= {".py", ".sql"} and any("migrations" in p.parts for p in files)
    found = [
        f"{path.relative_to(PROJECT_DIR)}: {match}"
        for path in files
        for text in (str(path.relative_to(engine)), path.read_text(encoding="utf-8"))
        for match in sorted(set(pattern.findall(text)))
    ]
    assert found == []
