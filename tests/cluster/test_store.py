"""What the Redis schema module decides without Redis: which coredis log records are noise."""

from __future__ import annotations

import logging

import pytest
import trio

from nfrx.cluster.store import CancelledNoise


def record(exc: BaseException | None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("coredis", logging.ERROR, __file__, 1, "msg", (), info)


def cancelled() -> trio.Cancelled:
    return trio.Cancelled._create()  # what a cancel scope raises; no public constructor


@pytest.mark.parametrize(
    ("exc", "kept"),
    [
        (None, True),
        (ConnectionError("refused"), True),
        (cancelled(), False),
        (BaseExceptionGroup("g", [cancelled(), cancelled()]), False),
        (BaseExceptionGroup("g", [cancelled(), OSError("reset")]), True),
    ],
)
def test_a_connection_attempt_cut_short_by_our_cancellation_is_not_logged(
    exc: BaseException | None, kept: bool
) -> None:
    assert CancelledNoise().filter(record(exc)) is kept
