"""The agent's reconnect schedule: 1 s x3, 5 s x3, 15 s x3, then every 30 s."""

from __future__ import annotations

import pytest

from nfrx.agent import backoff


def test_schedule_first_retries() -> None:
    assert [backoff.delay(n) for n in range(12)] == [1, 1, 1, 5, 5, 5, 15, 15, 15, 30, 30, 30]


@pytest.mark.parametrize("attempt", [9, 10, 50, 1000, 10**9])
def test_steady_state_is_every_30_s(attempt: int) -> None:
    assert backoff.delay(attempt) == 30


def test_schedule_never_decreases() -> None:
    delays = [backoff.delay(n) for n in range(40)]
    assert delays == sorted(delays)
    assert all(d > 0 for d in delays)


def test_first_retry_is_quick() -> None:
    # After a session that was up, the counter restarts at 0: the first retry comes after 1 s.
    assert backoff.delay(0) == 1
