"""The skip reason of an async fixture reaches ``-ra`` (see ``pytest_pyfunc_call`` in
``tests/conftest.py``), and pytest-trio still loses it on its own (else drop that hook)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SAMPLE = """
import pytest
import trio


@pytest.fixture
async def tool():
    await trio.lowlevel.checkpoint()
    pytest.skip("the tool is not installed: run install-tool.sh")
    yield


async def test_uses_the_tool(tool):
    pass
"""


def skip_summary(tmp_path: Path, *plugins: str) -> str:
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE)
    args = [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider"]
    args += ["-o", "trio_mode=true", "--rootdir", str(tmp_path)]
    for plugin in plugins:
        args += ["-p", plugin]
    result = subprocess.run(
        [*args, str(sample)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_an_async_fixture_skip_keeps_its_reason_and_location(tmp_path: Path) -> None:
    line = skip_summary(tmp_path, "tests.conftest")
    assert "the tool is not installed: run install-tool.sh" in line
    assert "test_sample.py:" in line


def test_pytest_trio_alone_still_drops_the_reason(tmp_path: Path) -> None:
    line = skip_summary(tmp_path)
    assert "install-tool.sh" not in line, "pytest-trio keeps skip reasons now: drop the hook"
