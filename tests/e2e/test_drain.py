"""Signals: SIGTERM drains (the server: new requests get 503, in-flight ones finish, agents are
told; an agent: no new work, in-flight work finishes, then it exits); a second one stops at once
with a clean error for whoever is still being served."""

from __future__ import annotations

import json
import signal

import httpx
import trio

from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_server_drains_on_sigterm(backend: FixtureBackend) -> None:
    async with (
        run_server() as server,
        run_agent(server, backend.base_url, env={"MAX_CONCURRENCY": "2"}) as agent,
        httpx.AsyncClient() as http,
    ):
        body = {
            "model": "fixture-model",
            "stream": True,
            "messages": MESSAGES,
            "fixture": {"events": 20, "interval": 0.05},
        }
        async with http.stream(
            "POST", server.api_base + "/chat/completions", json=body, headers=server.headers()
        ) as stream:
            chunks = stream.aiter_bytes()
            first = await chunks.__anext__()
            assert b"tok0" in first
            server.proc.signal(signal.SIGTERM)
            await server.proc.wait_for_line(r"SIGTERM: draining")
            refused = await http.post(
                server.api_base + "/chat/completions",
                json={"model": "fixture-model", "messages": MESSAGES},
                headers=server.headers(),
            )
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "draining"
            await agent.wait_for_line(r"the server is draining")
            health = await http.get(server.url + "/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "draining"
            rest = b"".join([c async for c in chunks])
        # The request that was in flight completed normally.
        assert rest.count(b'"content": "tok') == 19
        assert rest.endswith(b"data: [DONE]\n\n")
        with trio.fail_after(10):
            assert await server.proc.wait_exit() == 0


def long_stream(events: int = 200) -> dict[str, object]:
    return {
        "model": "fixture-model",
        "stream": True,
        "messages": MESSAGES,
        "fixture": {"events": events, "interval": 0.05},
    }


def sse_error(raw: bytes) -> dict[str, str]:
    """The error of the final ``event: error`` of a stream that must end with one."""
    last = raw.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: "), raw[-300:]
    error: dict[str, str] = json.loads(last.split(b"data: ", 1)[1])["error"]
    return error


async def test_a_second_signal_stops_the_server_at_once_with_a_clean_error(
    backend: FixtureBackend,
) -> None:
    async with (
        run_server() as server,
        run_agent(server, backend.base_url),
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            server.api_base + "/chat/completions",
            json=long_stream(),
            headers=server.headers(),
        ) as stream,
    ):
        chunks = stream.aiter_bytes()
        received = await chunks.__anext__()
        server.proc.signal(signal.SIGTERM)
        await server.proc.wait_for_line(r"SIGTERM: draining")
        server.proc.signal(signal.SIGTERM)
        received += b"".join([c async for c in chunks])
        assert sse_error(received)["code"] == "agent_disconnected"
        assert b"[DONE]" not in received
        with trio.fail_after(10):
            await server.proc.wait_exit()
        await server.proc.wait_for_line(r"SIGTERM again: stopping now")


async def test_an_idle_agent_exits_at_once_on_sigterm(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, name="idle") as agent:
        agent.signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await agent.wait_exit() == 0
        await agent.wait_for_line(r"SIGTERM: draining; 0 request\(s\) in flight")


async def test_a_draining_agent_finishes_its_work_and_gets_no_more(server: Server) -> None:
    async with (
        run_backend() as first_backend,
        run_backend() as second_backend,
        run_agent(server, first_backend.base_url, name="first") as first,
        run_agent(server, second_backend.base_url, name="second"),
        httpx.AsyncClient(timeout=30) as http,
        # Equal idle agents: the first request goes to the one that connected first.
        http.stream(
            "POST",
            server.api_base + "/chat/completions",
            json=long_stream(events=40),
            headers=server.headers(),
        ) as stream,
    ):
        chunks = stream.aiter_bytes()
        received = await chunks.__anext__()
        assert first_backend.requests[-1].path == "/v1/chat/completions"
        first.signal(signal.SIGTERM)
        await server.proc.wait_for_line(r"llm agent first: draining")
        # New work goes elsewhere at once.
        for _ in range(2):
            response = await http.post(
                server.api_base + "/chat/completions",
                json={"model": "fixture-model", "messages": MESSAGES},
                headers=server.headers(),
            )
            assert response.status_code == 200
        assert sum(r.path == "/v1/chat/completions" for r in second_backend.requests) == 2
        # The request in flight completes, then the agent exits by itself.
        received += b"".join([c async for c in chunks])
        assert received.endswith(b"data: [DONE]\n\n")
        with trio.fail_after(10):
            assert await first.wait_exit() == 0


async def test_agent_drain_timeout_zero_and_a_second_sigterm_stop_at_once(
    server: Server, backend: FixtureBackend
) -> None:
    for how in ("DRAIN_TIMEOUT=0", "second SIGTERM"):
        env = {"DRAIN_TIMEOUT": "0" if how == "DRAIN_TIMEOUT=0" else "-1"}
        async with (
            run_agent(server, backend.base_url, name="quick", env=env) as agent,
            httpx.AsyncClient(timeout=30) as http,
            http.stream(
                "POST",
                server.api_base + "/chat/completions",
                json=long_stream(),
                headers=server.headers(),
            ) as stream,
        ):
            chunks = stream.aiter_bytes()
            received = await chunks.__anext__()
            agent.signal(signal.SIGTERM)
            if how == "second SIGTERM":
                await agent.wait_for_line(r"SIGTERM: draining")
                agent.signal(signal.SIGTERM)
            received += b"".join([c async for c in chunks])
            assert sse_error(received)["code"] in ("agent_disconnected", "cancelled"), how
            with trio.fail_after(10):
                await agent.wait_exit()
