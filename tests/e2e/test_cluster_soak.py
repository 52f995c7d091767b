"""A soak of several instances: 500 tagged requests over 3 instances and 3 agents while one
instance is killed (SIGKILL) and a new one started in its place.

What must hold, whatever the timing: every request either completed once (HTTP 200, its own
answer) or failed with a clear error (an HTTP error with a JSON body, or -- for the clients of
the killed instance -- a refused or cut connection), never both; no backend ran a tag twice to
completion; and no agent ever had more requests at once than its MAX_CONCURRENCY (each
agent's backend counts them).
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import httpx
import trio

from tests.e2e.cluster import chat, instance_env, peak_concurrency, run_instances, wait_tunnels
from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

REQUESTS = 500
SENDERS = 12
CAPACITY = 2
CAP = 240.0


async def test_500_requests_over_3_instances_while_one_is_killed_and_replaced(
    redis_url: str,
) -> None:
    outcomes: dict[str, str] = {}
    backends: list[FixtureBackend] = []
    with trio.fail_after(CAP):
        async with AsyncExitStack() as stack:
            for _ in range(3):
                backends.append(
                    await stack.enter_async_context(run_backend(models=("fixture-model",)))
                )
            servers = await stack.enter_async_context(run_instances(redis_url, 3))
            agents = [
                await stack.enter_async_context(
                    run_agent(
                        server,
                        backend.base_url,
                        name=f"agent-{n}",
                        env={"MAX_CONCURRENCY": str(CAPACITY), "RECONNECT": "1"},
                    )
                )
                for n, (server, backend) in enumerate(zip(servers, backends, strict=True))
            ]
            for agent in agents:
                await wait_tunnels(agent, ["a", "b", "c"])
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            targets: list[Server | None] = list(servers)
            tags = iter(range(REQUESTS))
            done = 0
            killed = trio.Event()

            async def send(tag: str, server: Server) -> str:
                try:
                    response = await http.post(
                        f"{server.api_base}/chat/completions",
                        json=chat(tag, delay=0.01),
                        headers=server.headers(),
                    )
                except httpx.TransportError as exc:
                    return f"connection: {type(exc).__name__}"
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    assert body["choices"][0]["message"]["content"] == "hello from fixture"
                    return "ok"
                error = response.json()["error"]  # a clear error: JSON, with a code
                return f"{response.status_code} {error['code']}"

            async def sender() -> None:
                nonlocal done
                for n in tags:
                    server = targets[n % 3] or targets[0]
                    assert server is not None
                    tag = f"tag-{n}"
                    outcomes[tag] = await send(tag, server)
                    done += 1
                    if done == REQUESTS // 4:
                        killed.set()

            all_sent = trio.Event()

            async def fault() -> None:
                await killed.wait()
                victim = servers[2]
                targets[2] = None
                victim.proc.process.kill()
                await victim.proc.wait_exit()
                async with run_server(env=instance_env(redis_url, "c2")) as replacement:
                    for agent in agents:
                        await wait_tunnels(agent, ["c2"])
                    targets[2] = replacement
                    await all_sent.wait()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fault)
                async with trio.open_nursery() as senders:
                    for _ in range(SENDERS):
                        senders.start_soon(sender)
                all_sent.set()

    assert len(outcomes) == REQUESTS
    completed: dict[str, int] = {}
    for backend in backends:
        assert peak_concurrency(backend) <= CAPACITY
        for record in backend.requests:
            if record.path == "/v1/chat/completions" and not record.disconnected:
                tag = json.loads(record.body)["messages"][0]["content"]
                completed[tag] = completed.get(tag, 0) + 1
    assert all(count == 1 for count in completed.values()), "a request ran twice"
    for tag, outcome in outcomes.items():
        if outcome == "ok":
            assert completed.get(tag) == 1, tag
    ok = sum(1 for outcome in outcomes.values() if outcome == "ok")
    failures = {outcome for outcome in outcomes.values() if outcome != "ok"}
    assert ok >= REQUESTS * 0.8, failures
    assert failures <= {
        "connection: ConnectError",
        "connection: RemoteProtocolError",
        "connection: ReadError",
        "502 agent_gone",
        "502 upstream_error",
    }, failures
