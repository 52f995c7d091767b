"""The example environment files list every setting with a default nfrx parses back unchanged."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

from nfrx.config.load import load
from nfrx.config.model import (
    AsrAgentConfig,
    DoclingAgentConfig,
    LlmAgentConfig,
    McpAgentConfig,
    ServerConfig,
)
from tests.packaging.conftest import PACKAGING

ENV_DIR = PACKAGING / "env"
KINDS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "llm": LlmAgentConfig,
    "mcp": McpAgentConfig,
    "docling": DoclingAgentConfig,
    "asr": AsrAgentConfig,
}
LINE = re.compile(r"^#([A-Z][A-Z0-9_]*)=(.*)$")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nfrx_env_generate", ENV_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        assert not re.match(r"^[A-Z_]+=", line), f"{path.name}: {line!r} is not commented out"
        match = LINE.match(line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_checked_in_file_is_generated(kind: str) -> None:
    expected = _generator().render(kind)
    actual = (ENV_DIR / f"{kind}.env").read_text(encoding="utf-8")
    assert actual == expected, (
        f"packaging/env/{kind}.env is stale: run python packaging/env/generate.py"
    )


@pytest.mark.parametrize(("kind", "cls"), KINDS.items())
def test_every_setting_is_listed_once(kind: str, cls: type[Any]) -> None:
    lines = [
        line
        for line in (ENV_DIR / f"{kind}.env").read_text(encoding="utf-8").splitlines()
        if LINE.match(line)
    ]
    names = [LINE.match(line).group(1) for line in lines]  # type: ignore[union-attr]
    assert len(names) == len(set(names))
    model = {field.metadata["env"] for field in attrs.fields(cls)}
    assert model <= set(names)


@pytest.mark.parametrize(("kind", "cls"), KINDS.items())
def test_listed_defaults_are_the_defaults(kind: str, cls: type[Any]) -> None:
    listed = _settings(ENV_DIR / f"{kind}.env")
    known = {field.metadata["env"] for field in attrs.fields(cls)}
    environ = {name: value for name, value in listed.items() if name in known}
    if kind in ("mcp", "docling", "asr"):
        assert environ["SERVER_URL"] == f"ws://127.0.0.1:8080/api/{kind}/connect"
    from_file = load(cls, {}, environ, default_file=None)
    defaults = load(cls, {}, {}, default_file=None)
    assert from_file == defaults


@pytest.mark.parametrize("kind", KINDS)
def test_every_agent_is_released(kind: str) -> None:
    text = (ENV_DIR / f"{kind}.env").read_text(encoding="utf-8")
    assert "not released yet" not in text
    assert "(coming)" not in text
