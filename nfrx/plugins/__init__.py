"""The one list of plugins: each holds its server side and its agent side."""

from __future__ import annotations

SERVER_PLUGINS: tuple[str, ...] = ("llm", "mcp", "docling", "asr")
"""Plugin ids mounted by ``nfrx serve`` (module ``nfrx.plugins.<id>.server``)."""

MODEL_PLUGINS: frozenset[str] = frozenset({"llm", "asr"})
"""Plugins whose agents serve models clients name. Docling agents announce one pseudo-model
(``docling``) and MCP relays none: people are not told model counts about those."""
