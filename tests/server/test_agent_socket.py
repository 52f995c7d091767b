"""How the server words an agent's state in its log (the socket itself is tested end to end)."""

from __future__ import annotations

import pytest

from nfrx.plugins import plugin_class
from nfrx.server.agent_socket import describe


@pytest.mark.parametrize(
    ("kind", "models", "expected"),
    [
        ("llm", ("a", "b"), "ready, 2 models, capacity 4"),
        ("llm", (), "ready, 0 models, capacity 4"),
        ("asr", ("whisper-1",), "ready, 1 model, capacity 4"),
        ("docling", ("docling",), "ready, capacity 4"),  # its pseudo-model is no news
        ("mcp", (), "ready, capacity 4"),  # relays serve no models
    ],
)
def test_model_counts_only_for_kinds_with_models(
    kind: str, models: tuple[str, ...], expected: str
) -> None:
    named = plugin_class(kind).serves_models
    assert describe("ready", models, 4, named_models=named) == expected
