"""Build hook: records the git commit and date in ``nfrx/_build.json`` for ``nfrx --version``.

Everything else about the package lives in pyproject.toml.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone

from setuptools import setup
from setuptools.command.build_py import build_py


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class BuildWithInfo(build_py):
    def run(self) -> None:
        super().run()
        sha = _git("rev-parse", "--short", "HEAD") or "unknown"
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        when = (
            datetime.fromtimestamp(int(epoch), tz=timezone.utc)
            if epoch
            else datetime.now(tz=timezone.utc)
        )
        target = os.path.join(self.build_lib, "nfrx", "_build.json")
        with open(target, "w", encoding="utf-8") as f:
            json.dump({"sha": sha, "date": when.strftime("%Y-%m-%dT%H:%M:%SZ")}, f)


setup(cmdclass={"build_py": BuildWithInfo})
