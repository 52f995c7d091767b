"""The keys' Redis tests run on Redis' real clock: see :func:`live_now`."""

from __future__ import annotations

import math
import time

import pytest

WINDOW = 60.0


@pytest.fixture
def live_now(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """Set the test module's ``NOW`` to the middle of the minute window this test runs in.

    Redis expires a window's counts a minute after the window ends (``PEXPIREAT`` on Redis'
    clock), so a ``NOW`` fixed when the module was imported is stale once the suite has run for
    longer than that: the counts written for it vanish at once and no limit is ever reached."""
    now = math.floor(time.time() / WINDOW) * WINDOW + WINDOW / 2
    monkeypatch.setattr(request.module, "NOW", now)
    return now
