"""``GET /metrics`` through real server and agent processes: what a Prometheus scrape sees.

Each exchange's series are updated before the server logs the exchange's end (``... request_id=X``),
so the tests wait for that line before scraping: no sleeps, no polling.
"""

from __future__ import annotations

import signal
import socket
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from prometheus_client.samples import Sample


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def scrape(http: httpx.AsyncClient, base_url: str) -> list[Sample]:
    """Every sample of a scrape, which must need no credentials."""
    response = await http.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None if absent)."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def label_values(samples: list[Sample], label: str) -> set[str]:
    return {s.labels[label] for s in samples if label in s.labels}


def chat(model: str = "fixture-model", **fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if fixture:
        body["fixture"] = fixture
    return body


async def post_chat(
    http: httpx.AsyncClient, server: Server, request_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await http.post(
        f"{server.api_base}/chat/completions",
        json=body,
        headers={**server.headers(), "X-Request-Id": request_id},
    )


async def exchange_ended(server: Server, request_id: str) -> None:
    await server.proc.wait_for_line(rf"request_id={request_id}\b")


async def test_chat_requests_feed_counters_tokens_and_durations(
    server: Server, backend: FixtureBackend, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    before = await scrape(http, server.url)
    assert value(before, "nfrx_build_info") == 1
    assert {"version", "sha", "date"} <= next(
        s.labels.keys() for s in before if s.name == "nfrx_build_info"
    )
    assert value(before, "nfrx_model_requests_total") is None

    ok = await post_chat(http, server, "m-ok", chat())
    assert ok.status_code == 200, ok.text
    await exchange_ended(server, "m-ok")
    failed = await post_chat(http, server, "m-500", chat(status=500))
    assert failed.status_code == 500
    await exchange_ended(server, "m-500")

    after = await scrape(http, server.url)
    model = {"model": "fixture-model"}
    assert value(after, "nfrx_model_requests_total", **model, outcome="success") == 1
    assert value(after, "nfrx_model_requests_total", **model, outcome="error") == 1
    # The fixture reports usage 3 in / 4 out on the successful answer only.
    assert value(after, "nfrx_model_tokens_total", **model, kind="input") == 3
    assert value(after, "nfrx_model_tokens_total", **model, kind="output") == 4
    assert value(after, "nfrx_request_duration_seconds_count", **model) == 2
    assert value(after, "nfrx_request_duration_seconds_bucket", **model, le="+Inf") == 2
    assert value(after, "nfrx_requests_in_flight", plugin="llm") == 0
    assert label_values(after, "outcome") == {"success", "error"}


async def test_an_unknown_model_adds_no_label(
    server: Server, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    response = await post_chat(http, server, "m-404", chat("no-such-model"))
    assert response.status_code == 404, response.text
    ok = await post_chat(http, server, "m-after", chat())
    assert ok.status_code == 200, ok.text
    await exchange_ended(server, "m-after")

    samples = await scrape(http, server.url)
    assert label_values(samples, "model") == {"fixture-model"}
    assert value(samples, "nfrx_model_requests_total", outcome="success") == 1
    assert value(samples, "nfrx_model_requests_total", outcome="error") is None


async def test_agents_connected_follows_agents_coming_and_going(
    server: Server, backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    assert value(await scrape(http, server.url), "nfrx_agents_connected", plugin="llm") == 0
    async with run_agent(server, backend.base_url, name="gauge"):
        assert value(await scrape(http, server.url), "nfrx_agents_connected", plugin="llm") == 1
    await server.proc.wait_for_line(r"llm agent gauge \(.*\) disconnected")
    assert value(await scrape(http, server.url), "nfrx_agents_connected", plugin="llm") == 0


async def test_queue_depth_and_wait(http: httpx.AsyncClient) -> None:
    async with (
        run_server() as server,
        run_backend() as backend,
        run_agent(server, backend.base_url, env={"MAX_CONCURRENCY": "1"}),
        trio.open_nursery() as nursery,
    ):
        results: dict[str, httpx.Response] = {}

        async def send(request_id: str, body: dict[str, Any]) -> None:
            results[request_id] = await post_chat(http, server, request_id, body)

        nursery.start_soon(send, "q-busy", chat(hold="gate"))
        n = 1  # the agent's model probes come first
        while (await backend.wait_for_request(n)).path != "/v1/chat/completions":
            n += 1
        nursery.start_soon(send, "q-waits", chat())
        await server.proc.wait_for_line(r"request q-waits for \S+ queued at position 1")

        waiting = await scrape(http, server.url)
        assert value(waiting, "nfrx_queue_depth") == 1
        assert value(waiting, "nfrx_requests_in_flight", plugin="llm") == 1
        assert value(waiting, "nfrx_queue_wait_seconds_count") == 0

        backend.release("gate")
        await exchange_ended(server, "q-busy")
        await exchange_ended(server, "q-waits")
        done = await scrape(http, server.url)
        assert value(done, "nfrx_queue_depth") == 0
        assert value(done, "nfrx_requests_in_flight", plugin="llm") == 0
        assert value(done, "nfrx_queue_wait_seconds_count") == 1
        assert value(done, "nfrx_model_requests_total", outcome="success") == 2
    assert results["q-busy"].status_code == 200
    assert results["q-waits"].status_code == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_metrics_port_serves_metrics_there_only(http: httpx.AsyncClient) -> None:
    port = free_port()
    async with run_server(env={"METRICS_PORT": str(port)}) as server:
        await server.proc.wait_for_line(rf"metrics on http://127\.0\.0\.1:{port}/metrics")
        metrics_url = f"http://127.0.0.1:{port}"
        samples = await scrape(http, metrics_url)
        assert value(samples, "nfrx_agents_connected", plugin="llm") == 0

        main = await http.get(f"{server.url}/metrics")
        assert main.status_code == 404
        assert main.json()["error"]["code"] == "not_found"
        other = await http.get(f"{metrics_url}/v1/models")
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"

        server.proc.signal(signal.SIGTERM)
        assert await server.proc.wait_exit() == 0
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{metrics_url}/metrics")
