"""A key's counting windows and its refusals, pure: every function takes the time it is about.

Windows are fixed and aligned, so every instance and every restart agrees on where one starts:

* ``minute`` -- ``KEY_RATE_WINDOW`` seconds (60 by default) aligned to the Unix epoch; counts
  requests (``requests_per_minute``) and tokens (``tokens_per_minute``);
* ``day`` -- the UTC calendar day; ``month`` -- the UTC calendar month; count tokens
  (``tokens_per_day``, ``tokens_per_month``).

A request is counted when it is admitted (a refused one is not). Tokens are counted when an
exchange ends, from the usage its answer reported, in the windows of that moment. The check before
dispatch refuses while a window's count has reached its limit, so an answer that crosses a token
limit is allowed to finish and the next request is refused, until the window ends: the refusal's
``Retry-After`` is the whole number of seconds to that end (at least 1).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from nfrx.plugins.keys.model import Limits

MINUTE: Final = "minute"
DAY: Final = "day"
MONTH: Final = "month"
PERSISTED_PERIODS: Final = (DAY, MONTH)
"""Windows kept across restarts (a minute's counts are not: a restart forgets them)."""


def window_start(period: str, now: float, rate_window: float) -> float:
    """Start (Unix seconds) of the ``period`` window that holds ``now``."""
    if period == MINUTE:
        return math.floor(now / rate_window) * rate_window
    moment = datetime.fromtimestamp(now, UTC)
    if period == DAY:
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


def window_end(period: str, start: float, rate_window: float) -> float:
    """End (Unix seconds, exclusive) of the ``period`` window starting at ``start``."""
    if period == MINUTE:
        return start + rate_window
    moment = datetime.fromtimestamp(start, UTC)
    if period == DAY:
        return start + 86400.0
    if moment.month == 12:
        return moment.replace(year=moment.year + 1, month=1).timestamp()
    return moment.replace(month=moment.month + 1).timestamp()


@attrs.define
class Window:
    """One period's count: ``used`` within the window that starts at ``start``."""

    start: float = -math.inf
    used: int = 0


@attrs.frozen
class Refusal:
    """A limit reached: what to tell the client."""

    limit: str
    """The limit's name (``requests_per_minute``, ``tokens_per_day``, ...)."""
    value: int
    retry_after: int
    """Whole seconds until the window ends (at least 1)."""

    @property
    def code(self) -> str:
        """OpenAI's codes: ``rate_limit_exceeded`` per minute, ``insufficient_quota`` for the
        daily and monthly budgets."""
        return "rate_limit_exceeded" if self.limit.endswith("_minute") else "insufficient_quota"


@attrs.define
class Meter:
    """The live counts of one key (see the module docstring). Not thread-safe; no I/O."""

    rate_window: float
    requests: Window = attrs.field(factory=Window)
    tokens: dict[str, Window] = attrs.field(
        factory=lambda: {MINUTE: Window(), DAY: Window(), MONTH: Window()}
    )

    def _current(self, window: Window, period: str, now: float) -> Window:
        start = window_start(period, now, self.rate_window)
        if window.start != start:
            window.start, window.used = start, 0
        return window

    def refusal(self, limits: Limits, now: float) -> Refusal | None:
        """The first limit ``limits`` reaches at ``now``, or None."""
        checks = (
            ("requests_per_minute", limits.requests_per_minute, self.requests, MINUTE),
            ("tokens_per_minute", limits.tokens_per_minute, self.tokens[MINUTE], MINUTE),
            ("tokens_per_day", limits.tokens_per_day, self.tokens[DAY], DAY),
            ("tokens_per_month", limits.tokens_per_month, self.tokens[MONTH], MONTH),
        )
        for name, limit, window, period in checks:
            if limit is None:
                continue
            counted = self._current(window, period, now)
            if counted.used >= limit:
                end = window_end(period, counted.start, self.rate_window)
                return Refusal(name, limit, max(1, math.ceil(end - now)))
        return None

    def count_request(self, now: float) -> None:
        self._current(self.requests, MINUTE, now).used += 1

    def count_tokens(self, tokens: int, now: float) -> list[tuple[str, float]]:
        """Add ``tokens`` to every token window; the persisted windows it touched, as (period,
        start)."""
        touched = []
        for period, window in self.tokens.items():
            self._current(window, period, now).used += tokens
            if period in PERSISTED_PERIODS:
                touched.append((period, window.start))
        return touched

    def restore(self, period: str, start: float, used: int, now: float) -> None:
        """Take a persisted window's count back if it is still the current one at ``now``."""
        if window_start(period, now, self.rate_window) == start:
            window = self.tokens[period]
            window.start, window.used = start, used

    def view(self, now: float) -> dict[str, int]:
        """Counts of the current windows."""
        return {
            "requests_this_minute": self._current(self.requests, MINUTE, now).used,
            "tokens_this_minute": self._current(self.tokens[MINUTE], MINUTE, now).used,
            "tokens_today": self._current(self.tokens[DAY], DAY, now).used,
            "tokens_this_month": self._current(self.tokens[MONTH], MONTH, now).used,
        }
