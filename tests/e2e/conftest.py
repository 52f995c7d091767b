"""Every test in this directory starts real processes on 127.0.0.1: mark them all ``e2e``, so
``python -m pytest -m "not e2e"`` selects the fast tests (a file cannot forget its mark)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees every collected item, not only this directory's.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)
