"""The server's recent traffic, for the dashboard's charts: the ``traffic`` section of the state.

Relayed requests (those that reached an agent, :attr:`RequestRecord.relayed
<nfrx.server.accounting.RequestRecord.relayed>`) are counted, when they end, into wall-clock
buckets of :data:`BUCKET_SECONDS`; the last :data:`BUCKETS` of them (10 minutes) are kept. Per
bucket: requests, errors, input and output tokens, the 50th and 95th percentile of the requests'
durations (arrival to the answer's last byte), and the deepest the dispatch queue was seen. Beside
them, cumulative totals since the server started, from which a reader can compute rates of its
own.

Percentiles come from a log-scale histogram per bucket (:class:`LatencyHistogram`: each bin is
:data:`RATIO` wide, and a percentile is its bin's geometric middle: within about 10% of a duration
that was seen), so memory per bucket is bounded whatever the traffic.

The queue's depth is sampled when a request ends, when a request leaves the queue (the depth
just before it left), and when the state is read; a new bucket starts at the last depth seen.
Everything here is synchronous and cheap: it runs in the requests' own tasks.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Final

import attrs

from nfrx.server.accounting import ERROR

if TYPE_CHECKING:
    from nfrx.server.accounting import RequestRecord
    from nfrx.server.gateway import Gateway

BUCKET_SECONDS: Final = 10
BUCKETS: Final = 60
RATIO: Final = 1.2
"""Width of a latency bin: each one ends 20% above where it starts."""
_LOG_RATIO: Final = math.log(RATIO)
MIN_MS: Final = 1.0
"""Durations below this many milliseconds share the first bin."""


@attrs.define
class LatencyHistogram:
    """Durations in log-scale bins (see the module docstring)."""

    bins: dict[int, int] = attrs.field(factory=dict)
    count: int = 0

    def add(self, seconds: float) -> None:
        ms = max(seconds * 1000.0, MIN_MS)
        index = int(math.log(ms / MIN_MS) / _LOG_RATIO)
        self.bins[index] = self.bins.get(index, 0) + 1
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 < q <= 1) in milliseconds, rounded to 0.1; None when empty."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return round(MIN_MS * math.pow(RATIO, index + 0.5), 1)
        raise AssertionError("unreachable: the bins add up to count")  # pragma: no cover


@attrs.define
class Bucket:
    start: int
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    queue_max: int = 0
    latency: LatencyHistogram = attrs.field(factory=LatencyHistogram)


class Traffic:
    """The traffic history of one gateway (:attr:`Gateway.traffic
    <nfrx.server.gateway.Gateway.traffic>`); subscribes itself to the gateway's finished
    requests and its queue's departures."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._buckets: dict[int, Bucket] = {}
        self._depth = 0
        self.requests_total = 0
        self.errors_total = 0
        self.input_tokens_total = 0
        self.output_tokens_total = 0
        gateway.request_listeners.append(self.request_ended)
        gateway.queue.wait_listeners.append(self._left_queue)

    def _bucket(self, now: float) -> Bucket:
        start = int(now // BUCKET_SECONDS) * BUCKET_SECONDS
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = Bucket(start, queue_max=self._depth)
            oldest = start - BUCKETS * BUCKET_SECONDS
            for stale in [s for s in self._buckets if s <= oldest]:
                del self._buckets[stale]
        return bucket

    def sample_queue(self, now: float | None = None, depth: int | None = None) -> None:
        """Note the dispatch queue's depth (now, unless given)."""
        self._depth = len(self._gateway.queue) if depth is None else depth
        bucket = self._bucket(time.time() if now is None else now)
        bucket.queue_max = max(bucket.queue_max, self._depth)

    def _left_queue(self, waited: float) -> None:
        self.sample_queue(depth=len(self._gateway.queue) + 1)

    def request_ended(self, record: RequestRecord) -> None:
        now = time.time()
        self.sample_queue(now)
        if not record.relayed:
            return
        bucket = self._bucket(now)
        failed = int(record.outcome == ERROR)
        tokens_in, tokens_out = record.usage.input_tokens, record.usage.output_tokens
        bucket.requests += 1
        bucket.errors += failed
        bucket.input_tokens += tokens_in
        bucket.output_tokens += tokens_out
        bucket.latency.add(record.duration)
        self.requests_total += 1
        self.errors_total += failed
        self.input_tokens_total += tokens_in
        self.output_tokens_total += tokens_out

    def state(self, now: float) -> dict[str, Any]:
        """The ``traffic`` section at wall-clock ``now``: totals, and the last :data:`BUCKETS`
        buckets as columns, oldest first (the last one is the current, partial bucket)."""
        self.sample_queue(now)
        last = int(now // BUCKET_SECONDS) * BUCKET_SECONDS
        first = last - (BUCKETS - 1) * BUCKET_SECONDS
        buckets = [
            self._buckets.get(start) or Bucket(start)
            for start in range(first, last + 1, BUCKET_SECONDS)
        ]
        return {
            "bucket_seconds": BUCKET_SECONDS,
            "now": round(now, 3),
            "totals": {
                "requests": self.requests_total,
                "errors": self.errors_total,
                "input_tokens": self.input_tokens_total,
                "output_tokens": self.output_tokens_total,
            },
            "series": {
                "start": first,
                "requests": [b.requests for b in buckets],
                "errors": [b.errors for b in buckets],
                "input_tokens": [b.input_tokens for b in buckets],
                "output_tokens": [b.output_tokens for b in buckets],
                "latency_p50_ms": [b.latency.quantile(0.5) for b in buckets],
                "latency_p95_ms": [b.latency.quantile(0.95) for b in buckets],
                "queue_max": [b.queue_max for b in buckets],
            },
        }
