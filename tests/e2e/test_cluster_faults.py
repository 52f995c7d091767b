"""Faults of a gateway made of several instances: one killed, Redis stopped, one drained.

Real instances, agents and clients; the instance is killed with SIGKILL (no goodbye), Redis with
SIGKILL too. Progress is read from log lines, state streams and the backends' records.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest
import trio

from tests.e2e.cluster import (
    arrived,
    chat,
    contents,
    instance_env,
    run_instances,
    wait_members,
    wait_state,
    wait_tunnels,
)
from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import run_backend
from tests.fixtures.redis_server import REDIS_SERVER, RedisServer

CAP = 90.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may stop and start."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def post(http: httpx.AsyncClient, server: Server, content: str, **fixture: object) -> int:
    response = await http.post(
        f"{server.api_base}/chat/completions",
        json=chat(content, **fixture),
        headers=server.headers(),
    )
    return response.status_code


async def health(http: httpx.AsyncClient, server: Server) -> dict[str, object]:
    document: dict[str, object] = (await http.get(f"{server.url}/healthz")).json()
    return document


async def test_killing_one_instance_disturbs_only_its_own_clients(redis_url: str) -> None:
    async with run_backend(models=("fixture-model",)) as backend:
        with trio.fail_after(CAP):
            async with (
                run_instances(redis_url, 2) as (a, b),
                run_agent(a, backend.base_url, env={"MAX_CONCURRENCY": "4"}) as agent,
                httpx.AsyncClient(timeout=60) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                outcome: list[BaseException] = []

                async def held_on_a() -> None:
                    try:
                        await post(http, a, "in flight on a", hold="never")
                    except httpx.TransportError as exc:
                        outcome.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(held_on_a)
                    record = await arrived(backend, "in flight on a")
                    a.proc.process.kill()  # SIGKILL: no drain, no goodbye
                # Its own client's connection was closed (the nursery did not hang on it), and
                # the agent's backend request was cancelled with the tunnel.
                assert len(outcome) == 1
                await record.done.wait()
                assert record.disconnected
                for n in range(5):
                    assert await post(http, b, f"after {n}") == 200
                assert contents(backend)[-5:] == [f"after {n}" for n in range(5)]
                await wait_members(b, ["b"])
                document = await health(http, b)
                assert (document["status"], document["instances"]) == ("ok", 1)


async def test_redis_stopping_degrades_to_local_routing_and_recovers(
    own_redis: RedisServer,
) -> None:
    async with run_backend(models=("fixture-model",)) as backend:
        with trio.fail_after(CAP):
            async with (
                run_instances(own_redis.url, 2) as (a, b),
                run_agent(a, backend.base_url) as agent,
                httpx.AsyncClient(timeout=30) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                marks = [len(server.proc.lines) for server in (a, b)]
                own_redis.stop()
                for server, mark in zip((a, b), marks, strict=True):
                    line = await server.proc.wait_for_line(
                        r"Redis unreachable .* degraded", start=mark
                    )
                    assert "WARNING" in line.string
                    document = await health(http, server)
                    assert (document["status"], document["redis"]) == ("degraded", "unreachable")
                # Both keep serving through their own tunnels, queue included.
                for n in range(4):
                    assert await post(http, (a, b)[n % 2], f"degraded {n}") == 200
                snapshot = await wait_state(b, lambda s: s["server"]["degraded"] is True)
                assert [i["state"] for i in snapshot["instances"] if i["this"]] == ["degraded"]
                marks = [len(server.proc.lines) for server in (a, b)]
                own_redis.start()
                for server, mark in zip((a, b), marks, strict=True):
                    await server.proc.wait_for_line(r"Redis answers again", start=mark)
                    assert (await health(http, server))["status"] == "ok"
                await wait_state(
                    b,
                    lambda s: (
                        [i["id"] for i in s.get("instances", ())] == ["a", "b"]
                        and not s["server"]["degraded"]
                    ),
                )
                assert await post(http, b, "recovered") == 200


async def test_draining_one_instance_never_disturbs_the_others(redis_url: str) -> None:
    async with run_backend(models=("fixture-model",)) as backend:
        with trio.fail_after(CAP):
            async with (
                run_instances(redis_url, 2) as (a, b),
                run_agent(a, backend.base_url, env={"MAX_CONCURRENCY": "4"}) as agent,
                httpx.AsyncClient(timeout=60) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                statuses: list[int] = []

                async def held_on_a() -> None:
                    statuses.append(await post(http, a, "finishing on a", hold="go"))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(held_on_a)
                    await arrived(backend, "finishing on a")
                    mark = len(a.proc.lines)
                    a.proc.signal(signal.SIGTERM)
                    await a.proc.wait_for_line(r"SIGTERM: draining", start=mark)
                    # The other instance is untouched: healthy, serving, and it sees a draining.
                    for n in range(3):
                        assert await post(http, b, f"on b {n}") == 200
                    assert (await health(http, b))["status"] == "ok"
                    snapshot = await wait_state(
                        b,
                        lambda s: (
                            {i["id"]: i["state"] for i in s["instances"]}.get("a") == "draining"
                        ),
                    )
                    assert {i["id"]: i["state"] for i in snapshot["instances"]}["b"] == "ready"
                    backend.release("go")
                assert statuses == [200]
                assert await a.proc.wait_exit() == 0
                await wait_members(b, ["b"])
                # A new instance starts ready: no drain flag is left behind (the original's bug).
                async with run_server(env=instance_env(redis_url, "c")) as c:
                    await wait_members(c, ["b", "c"])
                    assert (await health(http, c))["status"] == "ok"
                    await wait_tunnels(agent, ["c"])
                    assert await post(http, c, "on c") == 200
