"""Server metrics without processes: outcomes, queue waits, the METRICS_PORT app's answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nfrx.config.model import ServerConfig
from nfrx.server.gateway import Gateway
from nfrx.server.metrics import metrics_asgi, outcome
from nfrx.server.usage import Usage
from tests.server.test_dispatch_queue import setup, ticket
from tests.server.test_scheduler import agent

if TYPE_CHECKING:
    from nfrx.server.proxy import Exchange


@attrs.define
class _Finished:
    """The fields of a finished :class:`Exchange` that metrics read."""

    model: str = "m1"
    status: int | None = 200
    failed: bool = False
    cancelled: bool = False
    usage: Usage | None = None
    duration: float = 0.5


@pytest.mark.parametrize(
    ("status", "failed", "cancelled", "expected"),
    [
        (200, False, False, "success"),
        (302, False, False, "success"),
        (404, False, False, "error"),
        (500, False, False, "error"),
        (200, True, False, "error"),  # cut short after the head
        (None, True, False, "error"),  # no head at all
        (200, False, True, "cancelled"),  # the client left mid-answer
        (None, False, True, "cancelled"),  # the client left before the head
    ],
)
def test_outcome(status: int | None, failed: bool, cancelled: bool, expected: str) -> None:
    exchange = cast("Exchange", _Finished(status=status, failed=failed, cancelled=cancelled))
    assert outcome(exchange) == expected


def samples(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = gateway.metrics.exposition("")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_finished_exchanges_are_counted_per_model_and_outcome() -> None:
    gateway = Gateway(ServerConfig())
    for listener in gateway.exchange_listeners:
        listener(cast("Exchange", _Finished(usage=Usage(input_tokens=3, output_tokens=4))))
        listener(cast("Exchange", _Finished(status=502)))
    got = samples(gateway)
    model = ("model", "m1")
    assert got["nfrx_model_requests_total", frozenset({model, ("outcome", "success")})] == 1
    assert got["nfrx_model_requests_total", frozenset({model, ("outcome", "error")})] == 1
    assert got["nfrx_model_tokens_total", frozenset({model, ("kind", "input")})] == 3
    assert got["nfrx_model_tokens_total", frozenset({model, ("kind", "output")})] == 4
    assert got["nfrx_request_duration_seconds_count", frozenset({model})] == 2
    assert got["nfrx_request_duration_seconds_sum", frozenset({model})] == 1.0


def test_queue_wait_is_reported_when_a_ticket_leaves_the_line() -> None:
    a = agent("a", models=("m1",))
    registry, queue = setup(a)
    waits: list[float] = []
    queue.wait_listeners.append(waits.append)
    assert queue.try_now(ticket("m1")) is not None  # served at once: no wait to report
    first, second = ticket("m1"), ticket("m1")
    queue.enqueue(first)
    queue.enqueue(second)
    assert waits == []
    queue.abandon(second)  # left the line
    assert len(waits) == 1
    registry.release(a)  # the slot frees: granted
    assert first.granted == (a, "m1")
    assert len(waits) == 2
    assert all(w >= 0 for w in waits)


async def _call(app: Any, method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


async def test_metrics_port_app_answers_metrics_and_nothing_else() -> None:
    app = metrics_asgi(Gateway(ServerConfig()).metrics)
    status, headers, body = await _call(app, "GET", "/metrics")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    assert b"nfrx_build_info{" in body
    assert int(headers[b"content-length"]) == len(body)

    status, headers, body = await _call(app, "HEAD", "/metrics")
    assert (status, body) == (200, b"")
    assert int(headers[b"content-length"]) > 0

    status, headers, body = await _call(app, "GET", "/state")
    assert status == 404
    assert headers[b"content-type"] == b"application/json"
    assert b'"not_found"' in body
