"""Agents that freeze, die or collide: the server notices, forgets them and tells the clients."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, RecordedRequest

pytestmark = pytest.mark.e2e

MODELS = ["fixture-model", "org/llama3:8b"]
FAST_HEARTBEAT = {"HEARTBEAT_INTERVAL": "0.2", "AGENT_DEAD_AFTER": "1"}


def chat(**fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fixture-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if fixture.pop("stream", False):
        body["stream"] = True
    if fixture:
        body["fixture"] = fixture
    return body


async def list_models(server: Server) -> dict[str, str]:
    """model id -> owned_by, as the server lists them now."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.api_base}/models", headers=server.headers())
    assert response.status_code == 200, response.text
    return {m["id"]: m["owned_by"] for m in response.json()["data"]}


async def agent_count(server: Server) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.url}/healthz")
    count: int = response.json()["agents"]["llm"]
    return count


async def wait_until(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.05
) -> None:
    """Poll the async ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    # The state lives in another process and is only visible over HTTP: polling is the way.
    with trio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110
            await trio.sleep(interval)


async def no_models(server: Server) -> bool:
    return await list_models(server) == {}


async def chat_ok(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.api_base}/chat/completions", headers=server.headers(), json=chat()
        )
    assert response.status_code == 200, response.text
    return response


def sse_events(text: str) -> list[dict[str, str]]:
    """The events of an SSE body: dicts with "data" and, when given, "event"."""
    events: list[dict[str, str]] = []
    for block in re.split(r"\r?\n\r?\n", text):
        if not block.strip():
            continue
        event: dict[str, str] = {}
        data: list[str] = []
        for line in block.splitlines():
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                event["event"] = value
        event["data"] = "\n".join(data)
        events.append(event)
    return events


def connected_id(proc: NfrxProcess, name: str) -> str:
    """The agent id from the agent's "connected to ... as NAME (ID)" line."""
    for line in proc.lines:
        match = re.search(rf"connected to \S+ as {re.escape(name)} \((\S+)\)", line)
        if match:
            return match.group(1)
    raise AssertionError(proc.output())


async def wait_eof(proc: NfrxProcess) -> None:
    """Until the process's output is fully read (it has exited)."""
    with trio.fail_after(10):
        while not proc.eof:
            await proc._changed.wait()


# -- a frozen agent -----------------------------------------------------------------------------


async def test_frozen_agent_is_dropped(backend: FixtureBackend) -> None:
    async with (
        run_server(env=FAST_HEARTBEAT) as server,
        run_agent(server, backend.base_url, name="frozen") as agent,
    ):
        assert await list_models(server) == dict.fromkeys(MODELS, "frozen")
        start = len(server.proc.lines)
        agent.signal(signal.SIGSTOP)
        try:
            await wait_until(lambda: no_models(server), timeout=10)
            assert await agent_count(server) == 0
            await server.proc.wait_for_line(
                r"llm:frozen: peer silent for 1\.0 s; closing the tunnel", start=start
            )
            await server.proc.wait_for_line(
                r"llm agent frozen \(\S+\) disconnected: peer silent for 1 s", start=start
            )
            # Requests for its models now fail fast instead of waiting for it.
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    f"{server.api_base}/chat/completions",
                    headers=server.headers(),
                    json=chat(),
                )
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "model_not_found"
        finally:
            agent.signal(signal.SIGCONT)
        # Thawed, it finds its tunnel gone and (without --reconnect) gives up.
        assert await agent.wait_exit() != 0
        await agent.wait_for_line(r"tunnel to \S+ closed")


async def test_live_agent_survives_fast_heartbeats(backend: FixtureBackend) -> None:
    # The heartbeat itself keeps an idle agent registered well past AGENT_DEAD_AFTER.
    async with (
        run_server(env=FAST_HEARTBEAT) as server,
        run_agent(server, backend.base_url, name="idle") as agent,
    ):
        start = len(server.proc.lines)
        # Let a few AGENT_DEAD_AFTER windows pass with the tunnel idle: only the heartbeats
        # (both ways) keep it registered.
        await trio.sleep(2.5)
        assert await list_models(server) == dict.fromkeys(MODELS, "idle")
        await chat_ok(server)
        assert agent.process.returncode is None
        assert not any("silent" in line for line in server.proc.lines[start:])


# -- a killed agent -----------------------------------------------------------------------------


async def test_killed_agent_models_disappear_at_once(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, name="doomed") as agent:
        assert await list_models(server) == dict.fromkeys(MODELS, "doomed")
        start = len(server.proc.lines)
        agent.signal(signal.SIGKILL)
        await wait_until(lambda: no_models(server), timeout=5)
        assert await agent_count(server) == 0
        await server.proc.wait_for_line(r"llm agent doomed \(\S+\) disconnected", start=start)
        assert await agent.wait_exit() == -signal.SIGKILL


async def test_killed_agent_fails_its_request_with_502(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, name="doomed") as agent:
        result: dict[str, httpx.Response] = {}

        async def call() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                result["response"] = await http.post(
                    f"{server.api_base}/chat/completions",
                    headers=server.headers(),
                    json=chat(hang=True),
                )

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                seen = len(backend.requests)
                nursery.start_soon(call)
                rec = await wait_for_chat(backend, seen)  # the agent has relayed it
                agent.signal(signal.SIGKILL)
        response = result["response"]
        assert response.status_code == 502, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "agent_disconnected"
        assert error["type"] == "api_error"
        assert "disconnected" in error["message"]
        # The backend learns the request is abandoned (the agent's connection went away).
        with trio.fail_after(10):
            await rec.done.wait()
        assert rec.disconnected
    # Nothing left: the model is gone with its only agent.
    assert await list_models(server) == {}


async def wait_for_chat(backend: FixtureBackend, seen: int) -> RecordedRequest:
    """The first chat request the backend received after its first ``seen`` requests."""
    while True:
        seen += 1
        rec = await backend.wait_for_request(seen)
        if rec.path == "/v1/chat/completions":
            return rec


async def test_killed_agent_mid_stream_ends_with_error_event(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, name="doomed") as agent:
        body = chat(stream=True, events=1000, interval=0.05)
        chunks: list[str] = []
        seen_data = 0
        with trio.fail_after(20):
            async with (
                httpx.AsyncClient(timeout=30) as http,
                http.stream(
                    "POST",
                    f"{server.api_base}/chat/completions",
                    headers=server.headers(),
                    json=body,
                ) as response,
            ):
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async for text in response.aiter_text():
                    chunks.append(text)
                    if seen_data < 3:
                        seen_data = "".join(chunks).count("data: {")
                        if seen_data >= 3:
                            agent.signal(signal.SIGKILL)
        events = sse_events("".join(chunks))
        assert seen_data >= 3
        *tokens, last = events
        assert len(tokens) >= 3
        for event in tokens:
            assert "event" not in event
            assert json.loads(event["data"])["object"] == "chat.completion.chunk"
        assert len(tokens) < 1000 + 3
        assert last["event"] == "error", events[-3:]
        error = json.loads(last["data"])
        assert set(error) == {"error"}
        assert error["error"]["code"] == "agent_disconnected"
        assert error["error"]["type"] == "api_error"
        assert error["error"]["message"]
        assert "[DONE]" not in "".join(chunks)
        assert "".join(chunks).endswith("\n\n")


# -- CLIENT_ID ----------------------------------------------------------------------------------


async def test_duplicate_client_id_is_refused(server: Server, backend: FixtureBackend) -> None:
    same = {"CLIENT_ID": "twin-id"}
    async with run_agent(server, backend.base_url, name="first", env=same) as first:
        assert connected_id(first, "first") == "twin-id"
        start = len(server.proc.lines)
        async with run_agent(
            server, backend.base_url, name="second", env=same, wait_connected=False
        ) as second:
            assert await second.wait_exit() == 1
            await second.wait_for_line(r"id 'twin-id' is connected.*\(id_in_use\)")
            await wait_eof(second)
        assert not any("connected to" in line for line in second.lines), second.output()
        output = second.output()
        assert "Traceback" not in output, output
        (reason,) = [line for line in second.lines if line.startswith("nfrx llm: ")]
        assert reason == second.lines[-1]
        assert "the server refused this agent: another llm agent with id 'twin-id'" in reason
        assert "give each agent its own CLIENT_ID" in reason
        await server.proc.wait_for_line(
            r"refused llm agent 'twin-id': another llm agent with id 'twin-id'", start=start
        )
        # The first one is untouched and still serves.
        assert first.process.returncode is None
        assert await list_models(server) == dict.fromkeys(MODELS, "first")
        await chat_ok(server)

        # Once the first is gone, the id is free again.
        first.signal(signal.SIGKILL)
        await wait_until(lambda: no_models(server), timeout=5)
        async with run_agent(server, backend.base_url, name="third", env=same) as third:
            assert connected_id(third, "third") == "twin-id"
            assert await list_models(server) == dict.fromkeys(MODELS, "third")
            await chat_ok(server)


async def test_a_restarted_agent_replaces_its_own_dead_tunnel(backend: FixtureBackend) -> None:
    # Long enough that the old tunnel is still registered when the new process dials in.
    env = {"HEARTBEAT_INTERVAL": "0.5", "AGENT_DEAD_AFTER": "60"}
    same = {"CLIENT_ID": "phoenix"}
    async with (
        run_server(env=env) as server,
        run_agent(server, backend.base_url, name="old", env=same) as old,
    ):
        old.signal(signal.SIGSTOP)  # frozen: its TCP connection stays open, it answers nothing
        try:
            start = len(server.proc.lines)
            async with run_agent(server, backend.base_url, name="new", env=same) as new:
                assert connected_id(new, "new") == "phoenix"
                await server.proc.wait_for_line(
                    r"agent old \(phoenix\): its old tunnel does not answer", start=start
                )
                assert await list_models(server) == dict.fromkeys(MODELS, "new")
                await chat_ok(server)
        finally:
            old.signal(signal.SIGCONT)


async def test_default_client_ids_differ(server: Server, backend: FixtureBackend) -> None:
    async with (
        run_agent(server, backend.base_url, name="left", wait_connected=False) as left,
        run_agent(server, backend.base_url, name="right", wait_connected=False) as right,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.wait_for_line, "connected to ")
            nursery.start_soon(right.wait_for_line, "connected to ")
        left_id = connected_id(left, "left")
        right_id = connected_id(right, "right")
        assert left_id != right_id
        assert await list_models(server) == dict.fromkeys(MODELS, "left,right")
        assert await agent_count(server) == 2
        assert left.process.returncode is None
        assert right.process.returncode is None


@pytest.fixture
async def two_agents(
    server: Server, backend: FixtureBackend
) -> AsyncIterator[tuple[NfrxProcess, NfrxProcess]]:
    async with (
        run_agent(server, backend.base_url, name="a") as a,
        run_agent(server, backend.base_url, name="b") as b,
    ):
        yield a, b


async def test_killing_one_of_two_agents_keeps_the_other(
    server: Server, two_agents: tuple[NfrxProcess, NfrxProcess]
) -> None:
    a, _ = two_agents
    assert await list_models(server) == dict.fromkeys(MODELS, "a,b")
    a.signal(signal.SIGKILL)

    async def only_b() -> bool:
        return await list_models(server) == dict.fromkeys(MODELS, "b")

    await wait_until(only_b, timeout=5)
    for _ in range(3):
        await chat_ok(server)
