"""Helpers for the tests of several instances: N ``nfrx serve`` processes on one real Redis,
agents holding a tunnel to each, readiness read from the processes' own log lines."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

from tests.e2e.harness import NfrxProcess, Server, run_server
from tests.fixtures.backend import FixtureBackend, RecordedRequest


def instance_env(
    redis_url: str, name: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "INSTANCE_ID": name, **(extra or {})}


@asynccontextmanager
async def run_instances(
    redis_url: str,
    count: int,
    *,
    env: Mapping[str, str] | None = None,
    names: tuple[str, ...] = ("a", "b", "c", "d"),
) -> AsyncIterator[list[Server]]:
    """``count`` instances (ids ``a``, ``b``, ...) sharing ``redis_url``, each seeing all the
    others when this yields."""
    async with AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(run_server(env=instance_env(redis_url, name, env)))
            for name in names[:count]
        ]
        for server in servers:
            await wait_members(server, names[:count])
        yield servers


async def wait_members(server: Server, names: tuple[str, ...] | list[str], start: int = 0) -> None:
    """Until ``server`` logs that the gateway's instances are exactly ``names``."""
    listed = ", ".join(sorted(names))
    await server.proc.wait_for_line(rf"instances of the gateway: {re.escape(listed)}$", start=start)


async def wait_tunnels(
    agent: NfrxProcess, names: tuple[str, ...] | list[str], start: int = 0
) -> None:
    """Until ``agent`` has connected to each instance in ``names`` (from log line ``start``)."""
    for name in names:
        await agent.wait_for_line(rf"connected to .*\(instance {re.escape(name)}\)", start=start)


async def wait_attached(servers: list[Server], names: tuple[str, ...] | list[str]) -> None:
    """Until every server's fleet view shows each agent attached to exactly ``names`` (the
    other instances' directory: what the shared queue order counts on)."""
    expected = sorted(names)

    def attached(snapshot: dict[str, Any]) -> bool:
        agents = snapshot["plugins"]["llm"]["agents"]
        return bool(agents) and all(a.get("instances") == expected for a in agents)

    for server in servers:
        await wait_state(server, attached)


def chat(content: str, model: str = "fixture-model", **fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if fixture:
        body["fixture"] = fixture
    return body


def contents(backend: FixtureBackend) -> list[str]:
    """The user message of every chat request the backend received, in arrival order."""
    return [
        r.json()["messages"][0]["content"]
        for r in backend.requests
        if r.path == "/v1/chat/completions" and r.body
    ]


async def arrived(backend: FixtureBackend, content: str) -> RecordedRequest:
    """Wait until the backend received the chat request whose user message is ``content``."""
    n = 1
    while True:
        record = await backend.wait_for_request(n)
        if record.path == "/v1/chat/completions" and record.json()["messages"][0]["content"] == (
            content
        ):
            return record
        n += 1


async def chats(backend: FixtureBackend, count: int) -> None:
    """Wait until the backend received ``count`` chat requests."""
    n = 1
    while len(contents(backend)) < count:
        await backend.wait_for_request(n)
        n += 1


def peak_concurrency(backend: FixtureBackend) -> int:
    """The most requests (other than model lists) the backend ever had in flight at once."""
    events: list[tuple[float, int]] = []
    for record in backend.requests:
        if record.method != "POST":
            continue
        events.append((record.started_at, 1))
        if record.finished_at is not None:
            events.append((record.finished_at, -1))
    peak = current = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts
        current += change
        peak = max(peak, current)
    return peak


async def state(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/api/state", headers=server.headers())
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


async def wait_state(server: Server, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first snapshot of ``server``'s state stream for which ``check`` holds."""
    async with (
        httpx.AsyncClient(timeout=None) as http,
        http.stream("GET", f"{server.url}/api/state/stream", headers=server.headers()) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                snapshot: dict[str, Any] = json.loads(line[6:])
                if check(snapshot):
                    return snapshot
    raise AssertionError("the state stream ended")
