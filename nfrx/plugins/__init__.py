"""The one list of plugins: each holds its server side and its agent side."""

from __future__ import annotations

SERVER_PLUGINS: tuple[str, ...] = ("llm", "mcp", "docling", "asr")
"""Plugin ids mounted by ``nfrx serve`` (module ``nfrx.plugins.<id>.server``)."""
