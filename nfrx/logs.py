"""Logging set-up for the command-line processes (called from the CLI only)."""

from __future__ import annotations

import logging
import sys


def configure(level: str) -> None:
    """Readable lines on stderr; never bodies or secrets (the code never logs them)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn logs every closed keep-alive connection at INFO; keep its warnings only.
    logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, root.level))
    for noisy in ("httpx", "httpcore", "trio-websocket", "quart.serving"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
