"""``nfrx man``: the packaged manual pages, through ``man -l`` or as plain text."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources

import pytest
from typer.testing import CliRunner

import nfrx.cli.man
from nfrx._gen import tree
from nfrx.cli import app
from nfrx.cli.man import plain
from tests.e2e.harness import clean_env

PAGES = sorted(
    entry.name
    for entry in (resources.files("nfrx") / "share" / "man").iterdir()
    if entry.name.endswith(".1")
)


def test_every_command_has_a_packaged_page() -> None:
    # Subcommands of a group (nfrx keys create) have pages of their own: nfrx-keys-create.1.
    commands = tree.from_app(app).walk()
    assert sorted(f"{'-'.join(command.path)}.1" for command in commands) == PAGES


@pytest.mark.parametrize("page", PAGES)
def test_plain_text_leaves_no_roff(page: str) -> None:
    roff = (resources.files("nfrx") / "share" / "man" / page).read_text(encoding="utf-8")
    text = plain(roff)
    name = page.removesuffix(".1")
    assert text.startswith(f"NAME\n       {name} - "), text[:200]
    for line in text.splitlines():
        assert not line.startswith("."), line
        assert "\\f" not in line, line
        assert "\\-" not in line, line
    assert "\nOPTIONS\n" in text
    assert "\nSEE ALSO\n" in text


def test_without_man_the_page_is_printed_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nfrx.cli.man.shutil, "which", lambda name: None)
    result = CliRunner().invoke(app, ["man", "serve"])
    assert result.exit_code == 0, result.output
    assert "NAME\n       nfrx-serve - run the public nfrx server\n" in result.stdout
    assert "       --request-timeout DURATION\n" in result.stdout
    default = CliRunner().invoke(app, ["man"])
    assert default.stdout.startswith("NAME\n       nfrx - put private AI services")


def test_an_unknown_command_exits_2_listing_the_commands() -> None:
    result = CliRunner().invoke(app, ["man", "nope"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "nfrx man: no command 'nope' "
        "(commands: asr, completion, docling, keys, llm, man, mcp, serve, status)\n"
    )


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (Debian: man-db)")
def test_with_man_the_page_is_formatted_by_man() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nfrx", "man", "llm"],
        env=clean_env({"MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NFRX-LLM(1)"), lines[:3]
    assert "nfrx-llm - run an nfrx agent for an OpenAI-compatible LLM backend" in result.stdout
