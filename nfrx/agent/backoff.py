"""The reconnect schedule (pure): 1 s x3, 5 s x3, 15 s x3, then every 30 s."""

from __future__ import annotations

SCHEDULE: tuple[float, ...] = (1, 1, 1, 5, 5, 5, 15, 15, 15)
STEADY = 30.0


def delay(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based) since the last good session."""
    return SCHEDULE[attempt] if attempt < len(SCHEDULE) else STEADY
