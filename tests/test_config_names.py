"""The three kinds of workers have names apart (ECO_PROCESSES, ECO_RELAY_LOOPS, ECO_INTAKE_FLUSHERS), and the
older names still work, so that operators' settings do not break. Every variable is declared once, in
service.config.SETTINGS, and the README's configuration table is made from it."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import pytest

from service.config import (
    PROJECT_DIR,
    SETTINGS,
    Config,
    ConfigError,
    Setting,
    default_of,
    markdown_table,
)

README_TABLE_START = "<!-- configuration table"
README_TABLE_END = "<!-- end of the configuration table -->"


def test_new_names() -> None:
    config = Config.from_env({"ECO_PROCESSES": "3", "ECO_RELAY_LOOPS": "4", "ECO_INTAKE_FLUSHERS": "5"})
    assert (config.processes, config.relay.loops, config.intake_flushers) == (3, 4, 5)


def test_old_names_are_aliases() -> None:
    config = Config.from_env({"ECO_WORKERS": "2", "ECO_RELAY_WORKERS": "0"})
    assert (config.processes, config.relay.loops) == (2, 0)


def test_the_new_name_wins_over_its_alias() -> None:
    config = Config.from_env({"ECO_PROCESSES": "2", "ECO_WORKERS": "5", "ECO_RELAY_LOOPS": "1"})
    assert (config.processes, config.relay.loops) == (2, 1)


def test_an_error_names_the_variable_the_operator_wrote() -> None:
    with pytest.raises(ConfigError, match="ECO_WORKERS"):
        Config.from_env({"ECO_WORKERS": "0"})


def readme_table() -> str:
    text = (PROJECT_DIR / "README.md").read_text()
    start = text.index("\n", text.index(README_TABLE_START)) + 1
    return text[start : text.index(README_TABLE_END)]


def test_the_readme_table_is_made_from_the_settings() -> None:
    assert readme_table() == markdown_table(), "run `python -m service config --markdown` into the README"


def test_the_command_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "config", "--markdown"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == markdown_table()


def test_each_variable_is_declared_once() -> None:
    names = [name for setting in SETTINGS for name in (setting.name, *setting.aliases)]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
    fields = [setting.field for setting in SETTINGS if not setting.extends]
    assert len(fields) == len(set(fields)), sorted(field for field in fields if fields.count(field) > 1)


NUMBERS = [setting for setting in SETTINGS if setting.bound is not None]


@pytest.mark.parametrize("setting", NUMBERS, ids=[setting.name for setting in NUMBERS])
def test_a_number_sets_its_field_and_is_refused_below_its_bound(setting: Setting) -> None:
    bound = setting.bound
    assert bound is not None
    config = Config.from_env({setting.name: str(bound)})
    assert default_of(config, setting.field) == bound
    below = bound - 1 if bound >= 1 else bound / 2 if bound > 0 else -1
    with pytest.raises(ConfigError, match=f"^{setting.name} must be >= {bound}, got "):
        Config.from_env({setting.name: str(below)})


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        ("ECO_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("DATABASE_URL", "postgresql://db/x", "database_url", "postgresql://db/x"),
        ("ECO_DATA_DIR", "/srv/eco", "data_dir", Path("/srv/eco")),
        ("ECO_LOG_JSON", "yes", "log_json", True),
        ("ECO_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("ECO_ADMIN_TOKEN", "s3cret", "admin_token", "s3cret"),
        ("ECO_CORS_ORIGINS", "", "cors_origins", ()),
        ("ECO_TRUSTED_PROXIES", "10.0.0.0/8", "trusted_proxies", (ip_network("10.0.0.0/8"),)),
        ("ECO_LLM_MODULES", "a, b", "llm_modules", ("a", "b")),
    ],
)
def test_a_variable_sets_its_field(name: str, raw: str, field: str, value: object) -> None:
    assert default_of(Config.from_env({name: raw}), field) == value


def test_a_blank_number_keeps_the_default() -> None:
    assert Config.from_env({"ECO_PORT": " ", "ECO_RELAY_BATCH": ""}) == Config()


def test_the_allowlist_adds_to_the_origins_once() -> None:
    config = Config.from_env(
        {"ECO_CORS_ORIGINS": "https://a.example", "CORS_ALLOWLIST": "https://a.example,b"}
    )
    assert config.cors_origins == ("https://a.example", "b")
