"""``/api/state`` and ``/api/state/stream`` through real processes: what the JSON says after real
requests, who may read it, and how the stream follows agents coming and going and the drain.

Busy agents are real requests the fixture backend holds open (``hang``), released by cancelling
their client; progress is observed through the backend's records and the stream, never sleeps.
"""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.e2e.test_queue import Client, arrived, chat
from tests.fixtures.backend import FixtureBackend, run_backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

STEP_TIMEOUT = 20.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def get_state(server: Server, http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(f"{server.url}/api/state", headers=server.headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    state: dict[str, Any] = response.json()
    return state


def rfc3339(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None
    return moment


class Snapshots:
    """The snapshots of a ``/api/state/stream`` response, read as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_text()
        self._buffer = ""
        self.comments: list[str] = []
        self.ended = False

    async def next(self) -> dict[str, Any]:
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                while "\n\n" in self._buffer:
                    block, self._buffer = self._buffer.split("\n\n", 1)
                    data = [ln[5:].strip() for ln in block.split("\n") if ln.startswith("data:")]
                    self.comments += [ln for ln in block.split("\n") if ln.startswith(":")]
                    if data:
                        snapshot: dict[str, Any] = json.loads("\n".join(data))
                        return snapshot
                try:
                    self._buffer += await self._chunks.__anext__()
                except StopAsyncIteration:
                    self.ended = True
                    raise AssertionError(f"the stream ended; left over: {self._buffer!r}") from None

    async def until(self, predicate: Any) -> dict[str, Any]:
        """The first snapshot from now on for which ``predicate`` holds."""
        while not predicate(snapshot := await self.next()):
            pass
        return snapshot

    async def rest(self) -> str:
        """Everything up to the end of the stream."""
        with trio.fail_after(STEP_TIMEOUT):
            async for text in self._chunks:
                self._buffer += text
        self.ended = True
        return self._buffer


def agent_names(snapshot: dict[str, Any]) -> list[str]:
    return [a["name"] for a in snapshot["plugins"]["llm"]["agents"]]


async def test_state_needs_the_api_key_but_the_page_does_not(
    server: Server, http: httpx.AsyncClient
) -> None:
    for path in ("/api/state", "/api/state/stream"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = await http.get(server.url + path, headers=headers)
            assert refused.status_code == 401, (path, headers)
            assert refused.json()["error"]["code"] == "invalid_api_key"
    # The Anthropic-style header works as for the API routes.
    allowed = await http.get(f"{server.url}/api/state", headers={"X-Api-Key": server.api_key})
    assert allowed.status_code == 200
    page = await http.get(f"{server.url}/state")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/api/state/stream" in page.text
    # Self-contained: nothing is loaded from anywhere else (the page shows example backend URLs
    # for agents, such as http://127.0.0.1:11434/v1, but loads nothing from them).
    for load in (
        r"""\b(src|href|action)\s*=\s*["']?(https?:)?//""",
        r"""url\(\s*["']?(https?:)?//""",
        r"@import",
        r"""fetch\(\s*["'`](https?:)?//""",
    ):
        assert not re.search(load, page.text), load


async def test_state_counts_requests_tokens_and_models(
    server: Server, backend: FixtureBackend, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    before = await get_state(server, http)
    started = rfc3339(before["server"]["started_at"])
    client = Client(server, http)
    done = await client.post("one", chat("one"))
    assert done.status_code == 200, done.text

    state = await get_state(server, http)
    info = state["server"]
    assert set(info) == {
        "version", "build_sha", "build_date", "started_at", "uptime_seconds", "draining",
        "plugins",
    }  # fmt: skip
    assert info["version"]
    assert info["plugins"] == ["llm", "mcp", "docling", "asr"]
    assert info["draining"] is False
    assert rfc3339(info["started_at"]) == started
    assert info["uptime_seconds"] >= before["server"]["uptime_seconds"]

    llm = state["plugins"]["llm"]
    assert llm["queue"] == {"length": 0, "capacity": 100}
    assert llm["summary"] == {
        "connected": 1, "working": 0, "idle": 1, "not_ready": 0, "draining": 0
    }  # fmt: skip
    [alpha] = llm["agents"]
    assert alpha["name"] == "alpha"
    assert alpha["status"] == "idle"
    assert alpha["models"] == ["fixture-model", "org/llama3:8b"]
    assert (alpha["inflight"], alpha["max_concurrency"]) == (0, 1)
    assert (alpha["processed_total"], alpha["failures_total"]) == (1, 0)
    # The fixture backend reports 3 prompt and 4 completion tokens per chat answer.
    assert (alpha["input_tokens_total"], alpha["output_tokens_total"]) == (3, 4)
    assert alpha["processing_ms_total"] > 0
    assert alpha["avg_processing_ms"] == pytest.approx(alpha["processing_ms_total"])
    connected = rfc3339(alpha["connected_at"])
    assert started <= connected <= rfc3339(alpha["last_heartbeat"])
    assert llm["models"] == [
        {"id": "fixture-model", "agents": ["alpha"], "input_tokens_total": 3,
         "output_tokens_total": 4},
        {"id": "org/llama3:8b", "agents": ["alpha"], "input_tokens_total": 0,
         "output_tokens_total": 0},
    ]  # fmt: skip

    # A request in flight makes the agent "working"; a second one waits in the queue.
    async with trio.open_nursery() as nursery:
        client.start(nursery, "held", chat("held", hang=True))
        await arrived(backend, "held")
        client.start(nursery, "waiting", chat("waiting"))
        await server.proc.wait_for_line(r"request waiting for \S+ queued at position 1")
        busy = (await get_state(server, http))["plugins"]["llm"]
        assert busy["agents"][0]["status"] == "working"
        assert busy["agents"][0]["inflight"] == 1
        assert busy["summary"]["working"] == 1
        assert busy["summary"]["idle"] == 0
        assert busy["queue"]["length"] == 1
        client.cancel("held")
    assert client.results["waiting"].status_code == 200
    after = (await get_state(server, http))["plugins"]["llm"]
    assert after["agents"][0]["status"] == "idle"
    assert after["agents"][0]["processed_total"] == 2  # "one" and "waiting"
    assert after["queue"]["length"] == 0
    assert after["models"][0]["input_tokens_total"] == 6


async def test_the_stream_starts_at_once_and_follows_agents(
    server: Server, backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with http.stream(
        "GET", f"{server.url}/api/state/stream", headers=server.headers()
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        snapshots = Snapshots(response)
        first = await snapshots.next()
        assert first["server"]["plugins"] == ["llm", "mcp", "docling", "asr"]
        assert agent_names(first) == []

        async with run_agent(server, backend.base_url, name="beta"):
            joined = await snapshots.until(lambda s: agent_names(s) == ["beta"])
            assert joined["plugins"]["llm"]["summary"]["connected"] == 1
            # A request's effects reach the stream too (tokens, processed count).
            ok = await Client(server, http).post("one", chat("one"))
            assert ok.status_code == 200
            served = await snapshots.until(
                lambda s: s["plugins"]["llm"]["agents"][0]["processed_total"] == 1
            )
            assert served["plugins"]["llm"]["agents"][0]["output_tokens_total"] == 4
        left = await snapshots.until(lambda s: agent_names(s) == [])
        assert left["plugins"]["llm"]["summary"]["connected"] == 0
        assert left["plugins"]["llm"]["models"][0]["agents"] == []  # its tokens stay


async def test_the_stream_shows_a_held_request_as_working(
    server: Server, backend: FixtureBackend, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    client = Client(server, http)
    async with (
        http.stream("GET", f"{server.url}/api/state/stream", headers=server.headers()) as response,
        trio.open_nursery() as nursery,
    ):
        snapshots = Snapshots(response)
        first = await snapshots.next()
        assert first["plugins"]["llm"]["agents"][0]["status"] == "idle"
        client.start(nursery, "held", chat("held", hang=True))
        await arrived(backend, "held")
        await snapshots.until(lambda s: s["plugins"]["llm"]["agents"][0]["status"] == "working")
        client.cancel("held")
        await snapshots.until(lambda s: s["plugins"]["llm"]["agents"][0]["status"] == "idle")


async def test_the_drain_ends_state_streams_and_state_stays_readable(
    http: httpx.AsyncClient,
) -> None:
    async with (
        run_server() as server,
        run_backend() as backend,
        run_agent(server, backend.base_url),
    ):
        client = Client(server, http)
        async with (
            http.stream(
                "GET", f"{server.url}/api/state/stream", headers=server.headers()
            ) as response,
            trio.open_nursery() as nursery,
        ):
            snapshots = Snapshots(response)
            await snapshots.next()
            # A request in flight keeps the server draining while we look.
            client.start(nursery, "held", chat("held", hang=True))
            await arrived(backend, "held")
            server.proc.signal(signal.SIGTERM)
            await server.proc.wait_for_line(r"SIGTERM: draining")
            # The stream ends cleanly by itself, though the drain is not over.
            await snapshots.rest()
            state = await get_state(server, http)
            assert state["server"]["draining"] is True
            assert state["plugins"]["llm"]["agents"][0]["inflight"] == 1
            client.cancel("held")
        with trio.fail_after(STEP_TIMEOUT):
            assert await server.proc.wait_exit() == 0


async def test_a_state_stream_does_not_hold_up_an_idle_server_exit(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with http.stream(
        "GET", f"{server.url}/api/state/stream", headers=server.headers()
    ) as response:
        snapshots = Snapshots(response)
        await snapshots.next()
        server.proc.signal(signal.SIGTERM)
        # A clean end (the final chunk), not hypercorn cutting the connection after its
        # graceful timeout (httpx would raise RemoteProtocolError).
        await snapshots.rest()
    assert await server.proc.wait_exit() == 0
