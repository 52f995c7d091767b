"""The agent's Prometheus metrics (``METRICS_PORT``), in a registry of its own.

Gauges are read from the runtime when scraped, so they cannot drift from what ``/status`` says;
counters and the duration histogram are fed by the runtime as requests start and finish. The
registry is per runtime (not prometheus-client's global one): two runtimes in one process, as in
tests, never share counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from nfrx.agent.runtime import AgentRuntime

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
"""Seconds; generations run from milliseconds (embeddings) to many minutes."""


class AgentMetrics:
    """The ``nfrx_worker_*`` metrics of one :class:`~nfrx.agent.runtime.AgentRuntime`."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge(
            "nfrx_worker_connected_to_server",
            "1 while the tunnel to the server is up.",
            registry=r,
        ).set_function(lambda: float(runtime.connected))
        Gauge(
            "nfrx_worker_connected_to_backend",
            "1 while the backend answers its probe.",
            registry=r,
        ).set_function(lambda: float(runtime.backend_ready))
        Gauge("nfrx_worker_current_jobs", "Requests being served now.", registry=r).set_function(
            lambda: float(runtime.inflight)
        )
        Gauge(
            "nfrx_worker_max_concurrency",
            "Requests this agent runs at once (MAX_CONCURRENCY).",
            registry=r,
        ).set_function(lambda: float(runtime.config.max_concurrency))
        self.started = Counter(
            "nfrx_worker_jobs_started", "Requests taken from the server.", registry=r
        )
        self.succeeded = Counter(
            "nfrx_worker_jobs_succeeded",
            "Requests the backend answered with a status below 500.",
            registry=r,
        )
        self.failed = Counter(
            "nfrx_worker_jobs_failed",
            "Requests that did not succeed: backend unreachable, broken or 5xx, or the request "
            "was cancelled (client gone, deadline, drain timeout).",
            registry=r,
        )
        self.duration = Histogram(
            "nfrx_worker_job_duration_seconds",
            "Time from taking a request to its end, whatever the outcome.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )

    def job_started(self) -> None:
        self.started.inc()

    def job_finished(self, *, succeeded: bool, seconds: float) -> None:
        (self.succeeded if succeeded else self.failed).inc()
        self.duration.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def create_metrics_app(metrics: AgentMetrics) -> QuartTrio:
    """``GET /metrics`` in the Prometheus text format; nothing else."""
    from quart import Response
    from quart_trio import QuartTrio

    app = QuartTrio("nfrx.agent.metrics")

    @app.get("/metrics")
    async def scrape() -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    return app
