"""The three kinds of workers have names apart (ECO_PROCESSES, ECO_RELAY_LOOPS, ECO_INTAKE_FLUSHERS), and the
older names still work, so that operators' settings do not break."""

from __future__ import annotations

import pytest

from service.config import Config, ConfigError


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
