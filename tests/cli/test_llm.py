"""``nfrx llm``'s backend settings: EMBEDDING_BATCH_SIZE and MODEL_POLL_INTERVAL.

As in the other command tests, the library entry point is replaced by a recorder, so these tests
see exactly the config ``nfrx llm`` would run with.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import attrs
import pytest
from typer.testing import CliRunner, Result

import nfrx.cli.llm
from nfrx.cli import app
from nfrx.config.load import ConfigError, load
from nfrx.config.model import LlmAgentConfig
from tests.e2e.harness import clean_env

AGENT_ENV = sorted({f.metadata["env"] for f in attrs.fields(LlmAgentConfig)})


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    configs: list[Any] = []
    monkeypatch.setattr(nfrx.cli.llm, "run", configs.append)
    return configs


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    environment: dict[str, str | None] = dict.fromkeys(AGENT_ENV)
    environment.update(env or {})
    return CliRunner().invoke(app, ["llm", *args], env=environment)


def test_defaults() -> None:
    config = load(LlmAgentConfig, {}, {})
    assert config.embedding_batch_size == 0
    assert config.model_poll_interval == 60.0


@pytest.mark.parametrize(
    ("args", "env", "batch", "poll"),
    [
        ([], {}, 0, 60.0),
        ([], {"EMBEDDING_BATCH_SIZE": "32", "MODEL_POLL_INTERVAL": "250ms"}, 32, 0.25),
        (["--embedding-batch-size", "8"], {"EMBEDDING_BATCH_SIZE": "32"}, 8, 60.0),
        (["--embedding-batch-size", "0"], {"EMBEDDING_BATCH_SIZE": "32"}, 0, 60.0),
        (["--model-poll-interval", "0.2"], {"MODEL_POLL_INTERVAL": "5m"}, 0, 0.2),
    ],
)
def test_sources_and_precedence(
    captured: list[Any], args: list[str], env: dict[str, str], batch: int, poll: float
) -> None:
    result = invoke(args, env)
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert isinstance(config, LlmAgentConfig)
    assert config.embedding_batch_size == batch
    assert config.model_poll_interval == pytest.approx(poll)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {"EMBEDDING_BATCH_SIZE": "-1"}, "EMBEDDING_BATCH_SIZE: must be at least 0, got -1"),
        (
            ["--embedding-batch-size", "-4"],
            {},
            "EMBEDDING_BATCH_SIZE: must be at least 0, got -4",
        ),
        ([], {"EMBEDDING_BATCH_SIZE": "many"}, "EMBEDDING_BATCH_SIZE: 'many' is not a whole"),
        ([], {"EMBEDDING_BATCH_SIZE": "2.5"}, "EMBEDDING_BATCH_SIZE: '2.5' is not a whole"),
        ([], {"MODEL_POLL_INTERVAL": "0"}, "MODEL_POLL_INTERVAL: must be a positive number"),
        (["--model-poll-interval", "-1"], {}, "MODEL_POLL_INTERVAL: must be a positive number"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(
    captured: list[Any], args: list[str], env: dict[str, str], message: str
) -> None:
    result = invoke(args, env)
    assert result.exit_code == 2, result.output
    assert captured == []
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"nfrx: configuration error: {message}"), lines[0]


def test_loader_rejects_a_negative_batch_size() -> None:
    with pytest.raises(ConfigError, match=r"^EMBEDDING_BATCH_SIZE: must be at least 0, got -1$"):
        load(LlmAgentConfig, {}, {"EMBEDDING_BATCH_SIZE": "-1"})


def test_help_documents_both_settings() -> None:
    result = CliRunner().invoke(app, ["llm", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--embedding-batch-size" in text
    assert "(0: no limit). [default: 0] [env: EMBEDDING_BATCH_SIZE]" in text
    assert "--model-poll-interval" in text
    assert "[env: MODEL_POLL_INTERVAL]" in text


def test_negative_batch_size_in_a_real_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nfrx", "llm"],
        env=clean_env({"EMBEDDING_BATCH_SIZE": "-1"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert (
        result.stderr
        == "nfrx: configuration error: EMBEDDING_BATCH_SIZE: must be at least 0, got -1\n"
    )
