"""``nfrx serve``'s limits on what agents announce: flags, environment, bad values."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.test_cli import captured, invoke

__all__ = ["captured"]  # the fixture, used by name


def test_the_limits_reach_the_config(captured: list[Any]) -> None:
    result = invoke(["serve", "--agent-max-models", "5"], {"AGENT_MAX_MODEL_NAME_BYTES": "64"})
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert (config.agent_max_models, config.agent_max_model_name_bytes) == (5, 64)


def test_the_defaults(captured: list[Any]) -> None:
    assert invoke(["serve"]).exit_code == 0
    (config,) = captured
    assert (config.agent_max_models, config.agent_max_model_name_bytes) == (1000, 256)


@pytest.mark.parametrize("variable", ["AGENT_MAX_MODELS", "AGENT_MAX_MODEL_NAME_BYTES"])
def test_a_limit_must_be_positive(captured: list[Any], variable: str) -> None:
    result = invoke(["serve"], {variable: "0"})
    assert result.exit_code == 2, result.output
    assert variable in result.output
    assert captured == []
