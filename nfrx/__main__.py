"""``python -m nfrx``."""

from __future__ import annotations

from nfrx.cli import main

main()
