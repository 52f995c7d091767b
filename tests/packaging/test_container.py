"""The Containerfile: what it copies exists and is not ignored, and its health check works."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import sys

import trio

from tests.e2e.harness import Server
from tests.packaging.conftest import REPO

CONTAINERFILE = REPO / "Containerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = CONTAINERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n", " ", text)
    result = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _one(instruction: str) -> str:
    found = [rest for word, rest in _instructions() if word == instruction]
    assert len(found) >= 1, instruction
    return found[-1]


def _copied_sources() -> list[str]:
    sources: list[str] = []
    for word, rest in _instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        parts = shlex.split(rest)
        sources += [p for p in parts[:-1] if not p.startswith("--")]
    return sources


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = [pattern, pattern.replace("**/", "")]
        if any(fnmatch.fnmatch(path, c) or path.startswith(c + "/") for c in candidates):
            ignored = not negate
    return ignored


def _patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_copied_path_exists() -> None:
    sources = _copied_sources()
    assert "nfrx" in [s.rstrip("/") for s in sources]
    for source in sources:
        assert (REPO / source).exists(), source


def test_copied_paths_are_not_ignored() -> None:
    patterns = _patterns()
    for source in _copied_sources():
        assert not _ignored(source.rstrip("/"), patterns), source


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = _patterns()
    for path in (
        ".venv",
        ".venv-ci",
        ".git",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".hypothesis",
        "nfrx/__pycache__",
        "nfrx.egg-info",
        "build",
        "dist",
        "tests",
    ):
        assert _ignored(path, patterns), path


def test_image_shape() -> None:
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    assert all(f.startswith("python:3.12-slim") for f in froms)
    user = _one("USER")
    assert user not in ("root", "0")
    assert json.loads(_one("ENTRYPOINT")) == ["nfrx"]
    assert json.loads(_one("CMD")) == ["serve", "--host", "0.0.0.0"]
    assert _one("EXPOSE") == "8080"
    assert "pip install ." in _one("RUN") or any(
        "pip install ." in rest for word, rest in _instructions() if word == "RUN"
    )
    assert "curl" not in _one("HEALTHCHECK")


def _healthcheck_command() -> list[str]:
    rest = _one("HEALTHCHECK")
    _, _, exec_form = rest.partition("CMD ")
    command: list[str] = json.loads(exec_form)
    return command


async def test_healthcheck_command_against_a_real_server(server: Server) -> None:
    """The image's HEALTHCHECK, run as written (with this Python), passes on a live server."""
    command = _healthcheck_command()
    assert command[0] == "python"
    port = server.url.rsplit(":", 1)[1]
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, *command[1:]],
            env={**os.environ, "PORT": port},
            check=False,
            capture_stderr=True,
        )
    assert result.returncode == 0, result.stderr


async def test_healthcheck_command_fails_without_a_server() -> None:
    command = _healthcheck_command()
    # Port 9 (discard) on loopback: nothing listens there in a test environment.
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, *command[1:]],
            env={**os.environ, "PORT": "9"},
            check=False,
            capture_stderr=True,
        )
    assert result.returncode != 0
