"""The one list of plugins: each holds its server side and its agent side."""

from __future__ import annotations

SERVER_PLUGINS: tuple[str, ...] = ("llm", "mcp", "docling", "asr")
"""Plugin ids mounted by ``nfrx serve`` (module ``nfrx.plugins.<id>.server``)."""

MODEL_PLUGINS: frozenset[str] = frozenset({"llm", "asr"})
"""Plugins whose agents serve models clients name. Docling agents announce one pseudo-model
(``docling``) and MCP relays none: people are not told model counts about those."""

SERVICE_PLUGINS: tuple[str, ...] = ("transfer", "jobs", "keys")
"""Plugins without agents, always mounted (like the original's, ``PLUGINS`` does not list them):
generic APIs of their own. Module ``nfrx.plugins.<id>.server`` has ``blueprint(gateway)`` and
``run(gateway, *, task_status)``, the plugin's background work, started in the server's root
nursery."""
