#!/usr/bin/env python3
"""Regenerate every generated file: shell completions and manual pages (nfrx/share/completions,
nfrx/share/man: package data, the one copy), the settings reference (docs/settings.md) and the
example env files of the system services (packaging/env/).

Run after adding or changing a command, an option or a setting: ``python scripts/gen_all.py``.
``--check`` only reports stale completions and manual pages (the tests check all of them).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from nfrx._gen.__main__ import main  # noqa: E402
from nfrx.config import reference  # noqa: E402

if __name__ == "__main__":
    status = main()
    if "--check" not in sys.argv[1:]:
        (CHECKOUT / "docs" / "settings.md").write_text(reference.markdown())
        runpy.run_path(str(CHECKOUT / "packaging" / "env" / "generate.py"), run_name="__main__")
    sys.exit(status)
