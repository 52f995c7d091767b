"""A key's windows (pure): aligned minutes, UTC days and months, refusals with the seconds to the
window's end, and an answer that crosses a limit refusing only the next request."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nfrx.plugins.keys.limits import DAY, MINUTE, MONTH, Meter, window_end, window_start
from nfrx.plugins.keys.model import Limits


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def test_windows_are_aligned() -> None:
    now = at(2026, 12, 31, 23, 59, 30)
    assert window_start(MINUTE, now, 60) == at(2026, 12, 31, 23, 59)
    assert window_start(MINUTE, now + 0.5, 7) % 7 == 0
    assert window_start(DAY, now, 60) == at(2026, 12, 31)
    assert window_end(DAY, at(2026, 12, 31), 60) == at(2027, 1, 1)
    assert window_start(MONTH, now, 60) == at(2026, 12, 1)
    assert window_end(MONTH, at(2026, 12, 1), 60) == at(2027, 1, 1)
    assert window_end(MONTH, at(2027, 2, 1), 60) == at(2027, 3, 1)


def test_requests_per_minute_refuses_until_the_window_ends() -> None:
    meter = Meter(60.0)
    limits = Limits(requests_per_minute=2)
    start = at(2026, 5, 17, 12, 0, 0)
    for second in (0, 10):
        assert meter.refusal(limits, start + second) is None
        meter.count_request(start + second)
    refusal = meter.refusal(limits, start + 20.5)
    assert refusal is not None
    assert (refusal.limit, refusal.value, refusal.retry_after) == ("requests_per_minute", 2, 40)
    assert refusal.code == "rate_limit_exceeded"
    assert meter.refusal(limits, start + 59.9) is not None
    assert meter.refusal(limits, start + 60) is None  # a new window


def test_an_answer_that_crosses_a_token_limit_refuses_the_next_request() -> None:
    meter = Meter(60.0)
    limits = Limits(tokens_per_minute=100)
    now = at(2026, 5, 17, 12, 0, 0)
    assert meter.refusal(limits, now) is None
    meter.count_tokens(99, now)
    assert meter.refusal(limits, now) is None  # below: the next request may still cross it
    meter.count_tokens(250, now + 1)
    refusal = meter.refusal(limits, now + 1)
    assert refusal is not None
    assert refusal.limit == "tokens_per_minute"
    assert refusal.retry_after == 59


@pytest.mark.parametrize(
    ("limits", "name", "code", "now", "retry_after"),
    [
        (Limits(tokens_per_day=10), "tokens_per_day", "insufficient_quota", (23, 0, 0), 3600),
        (Limits(tokens_per_month=10), "tokens_per_month", "insufficient_quota", (23, 59, 59), 1),
    ],
)
def test_budgets_refuse_until_midnight_or_the_next_month(
    limits: Limits, name: str, code: str, now: tuple[int, int, int], retry_after: int
) -> None:
    meter = Meter(60.0)
    moment = at(2026, 5, 31, *now)
    meter.count_tokens(10, moment)
    refusal = meter.refusal(limits, moment)
    assert refusal is not None
    assert (refusal.limit, refusal.code, refusal.retry_after) == (name, code, retry_after)
    assert meter.refusal(limits, at(2026, 6, 1)) is None  # recovered when the window ended


def test_a_restored_window_counts_only_while_it_is_current() -> None:
    today = at(2026, 5, 17)
    meter = Meter(60.0)
    meter.restore(DAY, today, 500, today + 3600)
    meter.restore(MONTH, at(2026, 4, 1), 900, today + 3600)  # last month's: forgotten
    assert meter.view(today + 7200) == {
        "requests_this_minute": 0,
        "tokens_this_minute": 0,
        "tokens_today": 500,
        "tokens_this_month": 0,
    }
    assert meter.refusal(Limits(tokens_per_day=500), today + 7200) is not None


def test_count_tokens_names_the_stored_windows_it_touched() -> None:
    meter = Meter(60.0)
    now = at(2026, 5, 17, 8, 30)
    assert meter.count_tokens(5, now) == [(DAY, at(2026, 5, 17)), (MONTH, at(2026, 5, 1))]
