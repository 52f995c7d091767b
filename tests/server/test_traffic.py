"""The traffic history behind the dashboard's charts: latency percentiles from a bounded
histogram, buckets that roll with the wall clock, and only relayed requests counted."""

from __future__ import annotations

import math

import pytest

from nfrx.config.model import ServerConfig
from nfrx.server.accounting import RequestRecord, route_of
from nfrx.server.gateway import Gateway
from nfrx.server.traffic import BUCKET_SECONDS, BUCKETS, LatencyHistogram, Traffic
from nfrx.server.usage import Usage


def test_percentiles_are_within_ten_percent_of_a_seen_duration() -> None:
    histogram = LatencyHistogram()
    assert histogram.quantile(0.5) is None
    durations = [0.010 * (index + 1) for index in range(100)]  # 10 ms .. 1 s
    for seconds in durations:
        histogram.add(seconds)
    for q, exact_ms in ((0.5, 500.0), (0.95, 950.0)):
        estimate = histogram.quantile(q)
        assert estimate is not None
        assert math.isclose(estimate, exact_ms, rel_tol=0.1)
    assert len(histogram.bins) < 40  # bounded by the range, not the count


def test_tiny_durations_share_the_first_bin() -> None:
    histogram = LatencyHistogram()
    histogram.add(0.0)
    histogram.add(0.0002)
    assert histogram.bins == {0: 2}


def record(*, relayed: bool, status: int = 200, seconds: float = 0.5) -> RequestRecord:
    rec = RequestRecord("llm", started=0.0)
    if relayed:
        rec.exchange_ended("m", Usage(3, 4), failed=status >= 500, cancelled=False)
    rec.status = status
    rec.ended = seconds
    return rec


def test_relayed_requests_land_in_wall_clock_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(ServerConfig())
    traffic = Traffic(gateway)
    now = 1_780_000_005.0
    monkeypatch.setattr("nfrx.server.traffic.time.time", lambda: now)
    traffic.request_ended(record(relayed=True))
    traffic.request_ended(record(relayed=True, status=502, seconds=2.0))
    traffic.request_ended(record(relayed=False, status=401))  # never reached an agent
    now += BUCKET_SECONDS
    traffic.request_ended(record(relayed=True))
    state = traffic.state(now)
    series = state["series"]
    assert state["totals"] == {
        "requests": 3,
        "errors": 1,
        "input_tokens": 9,
        "output_tokens": 12,
    }
    assert len(series["requests"]) == BUCKETS
    assert series["start"] == 1_780_000_010 - (BUCKETS - 1) * BUCKET_SECONDS
    assert series["requests"][-2:] == [2, 1]
    assert series["errors"][-2:] == [1, 0]
    assert series["output_tokens"][-2:] == [8, 4]
    assert series["latency_p50_ms"][-3] is None
    assert math.isclose(series["latency_p95_ms"][-2], 2000, rel_tol=0.1)


def test_old_buckets_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = Gateway(ServerConfig())
    traffic = Traffic(gateway)
    now = 1_780_000_000.0
    monkeypatch.setattr("nfrx.server.traffic.time.time", lambda: now)
    for _ in range(BUCKETS * 2):
        traffic.request_ended(record(relayed=True))
        now += BUCKET_SECONDS
    assert sum(traffic.state(now)["series"]["requests"]) == BUCKETS - 1
    assert traffic.requests_total == BUCKETS * 2


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/llm/v1/chat/completions", "llm"),
        ("/api/llm/id/a/v1/messages", "llm"),
        ("/api/asr/v1/audio/transcriptions", "asr"),
        ("/api/docling/v1/convert/source", "docling"),
        ("/api/mcp/id/files", "mcp:files"),
        ("/api/mcp/id/files/", "mcp:files"),
        ("/api/mcp/connect", None),
        ("/api/jobs/abc/events", "jobs"),
        ("/api/transfer/xyz", "jobs"),
        ("/api/state", None),
        ("/api/admin/keys", None),
        ("/state", None),
        ("/", None),
    ],
)
def test_route_of(path: str, route: str | None) -> None:
    assert route_of(path) == route
