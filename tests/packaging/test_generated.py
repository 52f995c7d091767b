"""The generated manual pages and completion scripts (nfrx/share/) are checked in up to date,
and every page renders without a groff warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nfrx._gen.__main__ import CHECKOUT, SHARE, generated, stale
from nfrx._gen.tree import from_app
from nfrx.cli import app

PAGES = sorted((CHECKOUT / SHARE / "man").glob("*.1"))


def test_checked_in_files_are_the_generators_output() -> None:
    files = generated(from_app(app))
    assert {path.parent for path in files} == {SHARE / "completions", SHARE / "man"}
    assert stale(CHECKOUT, files) == [], "stale: run python scripts/gen_all.py"


def test_there_is_one_copy() -> None:
    # The package's copy is the only one (the .deb and `nfrx man` read it).
    assert not (CHECKOUT / "man").exists()
    assert not (CHECKOUT / "completions").exists()


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed (groff-base)")
@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_renders_without_warnings(page: Path) -> None:
    result = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


COMPLETIONS = CHECKOUT / SHARE / "completions"


def _shell(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize(
    ("shell", "script", "check"),
    [("bash", "nfrx.bash", "-n"), ("zsh", "_nfrx", "-n"), ("fish", "nfrx.fish", "--no-execute")],
)
def test_completion_script_parses(shell: str, script: str, check: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    _shell(shell, check, str(COMPLETIONS / script))


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_and_options() -> None:
    script = COMPLETIONS / "nfrx.bash"
    out = _shell(
        "bash",
        "-c",
        f'source "{script}"; COMP_WORDS=(nfrx ma); COMP_CWORD=1; _nfrx; echo "${{COMPREPLY[@]}}"; '
        "COMP_WORDS=(nfrx llm --request-t); COMP_CWORD=2; _nfrx; "
        'echo "${COMPREPLY[@]}"',
    )
    assert out.splitlines() == ["man", "--request-timeout"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_and_options() -> None:
    script = COMPLETIONS / "nfrx.fish"
    out = _shell("fish", "-c", f'source "{script}"; complete -C "nfrx ma"; complete -C "nfrx --"')
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert "man" in names
    assert "--version" in names
    assert "--install-completion" not in names
