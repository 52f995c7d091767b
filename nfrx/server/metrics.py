"""The server's Prometheus metrics (``GET /metrics``), in a registry the gateway owns.

Two kinds of series:

* **Read at scrape time** from the registry and the dispatch queue -- agents connected, requests
  in flight (per agent plugin the server has), queue depth -- and the build info: nothing to keep
  in step, so they cannot drift from ``/api/state``.
* **Fed by events**: every finished :class:`~nfrx.server.proxy.Exchange` (the gateway's
  ``exchange_listeners``) adds to the request, token and duration series; every ticket leaving
  the dispatch queue (granted, refused or abandoned) adds its wait to the queue-wait histogram.

Label values are bounded: ``model`` is always the agent's own model id of a relayed exchange
(a request for a model no agent serves is refused before any exchange exists), ``plugin`` is the
kind of one of the server's agent plugins, ``outcome`` and ``kind`` are fixed sets.

Plugins add series of their own (:meth:`Plugin.collectors
<nfrx.server.plugin.Plugin.collectors>`: MCP's exchanges, jobs, transfers), registered here by
the gateway; a plugin the server does not have adds none.

The registry is per gateway, not prometheus-client's global one: no process or platform series,
and two gateways in one process (tests) never share counters.

Where ``/metrics`` is served: on the main port (:func:`register_route`), or -- with
``METRICS_PORT`` -- only on a listener of its own (:func:`metrics_asgi`, run by the runner).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from nfrx._build import build_info
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric
    from quart_trio import QuartTrio

    from nfrx.server.gateway import Gateway
    from nfrx.server.proxy import Exchange

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))
"""Seconds; exchanges run from milliseconds (embeddings) to many minutes (long generations)."""

QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, float("inf"))
"""Seconds a request waited in line (bounded by ``LLM_QUEUE_TIMEOUT``)."""

SUCCESS = "success"
ERROR = "error"
CANCELLED = "cancelled"


def outcome(exchange: Exchange) -> str:
    """``cancelled`` when the client gave up before the answer ended (disconnect, its own
    timeout); else ``success`` for a complete answer below 400; ``error`` for an upstream
    4xx/5xx, an exchange without a response head, or one cut short (agent failure, timeout)."""
    if exchange.cancelled:
        return CANCELLED
    if exchange.failed or exchange.status is None or exchange.status >= 400:
        return ERROR
    return SUCCESS


@functools.cache
def _build() -> tuple[str, str, str]:
    # Once per process: it may run ``git`` (see nfrx._build), so not per scrape or per gateway.
    info = build_info()
    return info["version"], info["sha"], info["date"]


class _LiveCollector:
    """Series computed from the gateway's state at each scrape."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        build, agents, inflight, depth = families
        build.add_metric(list(_build()), 1)
        registry = self._gateway.registry
        for plugin in self._gateway.agent_kinds:
            live = registry.agents(plugin)
            agents.add_metric([plugin], len(live))
            inflight.add_metric([plugin], sum(agent.inflight for agent in live))
        depth.add_metric([], len(self._gateway.queue))
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "nfrx_build_info",
                "Always 1; the labels name the running nfrx build.",
                labels=["version", "sha", "date"],
            ),
            GaugeMetricFamily(
                "nfrx_agents_connected", "Agents with a live tunnel.", labels=["plugin"]
            ),
            GaugeMetricFamily(
                "nfrx_requests_in_flight",
                "Agent slots taken now (requests being relayed, or granted and starting).",
                labels=["plugin"],
            ),
            GaugeMetricFamily("nfrx_queue_depth", "Requests waiting in line for an agent."),
        ]


class ServerMetrics:
    """The metrics of one :class:`~nfrx.server.gateway.Gateway`; subscribes itself to the
    gateway's finished exchanges and to its queue's departures."""

    def __init__(self, gateway: Gateway) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_LiveCollector(gateway))
        self.requests = Counter(
            "nfrx_model_requests",
            "Exchanges relayed to an agent, by the agent's model id and outcome (success, "
            "error, cancelled: the client gave up; a request retried on another agent counts "
            "once per attempt).",
            ["model", "outcome"],
            registry=r,
        )
        self.tokens = Counter(
            "nfrx_model_tokens",
            "Tokens reported in relayed responses' usage, by model and kind (input/output).",
            ["model", "kind"],
            registry=r,
        )
        self.duration = Histogram(
            "nfrx_request_duration_seconds",
            "Time from sending an exchange to an agent to its end, whatever the outcome.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "nfrx_queue_wait_seconds",
            "Time a request waited in the dispatch queue, until granted a slot, refused or "
            "abandoned (requests served at once are not counted).",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        gateway.exchange_listeners.append(self.exchange_finished)
        gateway.queue.wait_listeners.append(self.queue_wait.observe)

    def exchange_finished(self, exchange: Exchange) -> None:
        model = exchange.model
        self.requests.labels(model, outcome(exchange)).inc()
        self.duration.labels(model).observe(exchange.duration)
        if exchange.usage is not None:
            self.tokens.labels(model, "input").inc(exchange.usage.input_tokens)
            self.tokens.labels(model, "output").inc(exchange.usage.output_tokens)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header (Prometheus text
        by default, OpenMetrics when asked for)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def register_route(app: QuartTrio, metrics: ServerMetrics) -> None:
    """``GET /metrics`` on the main app (no authentication, like the original)."""
    from quart import Response, request

    @app.get("/metrics")
    async def scrape() -> Response:
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        return Response(body, content_type=content_type)


_NOT_FOUND = HttpError(404, "not_found", "no such route").json_bytes()
"""The same answer as the main app's for an unknown route."""


def metrics_asgi(metrics: ServerMetrics) -> Any:
    """A bare ASGI app for the ``METRICS_PORT`` listener: ``GET``/``HEAD /metrics``, and a JSON
    404 for anything else. No Quart: it serves one read-only route."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            headers = dict(scope["headers"])
            accept = headers.get(b"accept", b"").decode("latin-1")
            status, (body, content_type) = 200, metrics.exposition(accept)
        else:
            status, body, content_type = 404, _NOT_FOUND, "application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})

    return app
