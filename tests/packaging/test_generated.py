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
