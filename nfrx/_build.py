"""Build information for ``nfrx --version``: the git commit and date, when known."""

from __future__ import annotations

import json
import subprocess
from importlib import resources
from pathlib import Path

from nfrx._version import __version__


def build_info() -> dict[str, str]:
    """``{"version", "sha", "date"}``: from ``nfrx/_build.json`` (written when a package is
    built), else from the git checkout the code runs from, else ``"unknown"``."""
    try:
        data = json.loads(resources.files("nfrx").joinpath("_build.json").read_text())
        return {"version": __version__, "sha": data["sha"], "date": data["date"]}
    except (FileNotFoundError, KeyError, ValueError, OSError):
        pass
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %cI"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.split()
        sha, date = out[0], out[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        sha, date = "unknown", "unknown"
    return {"version": __version__, "sha": sha, "date": date}
