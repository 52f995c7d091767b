"""Several ``nfrx serve`` instances on one real Redis behave as one gateway.

Each test starts real instances (``REDIS_URL`` on the session's redis-server), real agents that
dial one of them (``SERVER_URL``) and then every other (the Welcome's and Members' list), and
real clients on a different instance than the agent dialled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import trio

from tests.e2e.cluster import (
    arrived,
    chat,
    chats,
    contents,
    peak_concurrency,
    run_instances,
    state,
    wait_attached,
    wait_state,
    wait_tunnels,
)
from tests.e2e.harness import Server, run_agent, run_plugin_agent
from tests.e2e.test_agent_status import get_status, status_agent
from tests.fixtures.backend import FixtureBackend, run_backend
from tests.fixtures.docling import run_docling
from tests.fixtures.mcp_stack import agent_env

CAP = 90.0
MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"},
    },
}
MCP_ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def openai_client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0)


def queue_length(snapshot: dict[str, Any]) -> int:
    length: int = snapshot["plugins"]["llm"]["queue"]["length"]
    return length


async def test_a_client_of_one_instance_reaches_an_agent_that_dialled_another(
    redis_url: str, backend: FixtureBackend
) -> None:
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2) as (a, b), run_agent(a, backend.base_url) as agent:
            await wait_tunnels(agent, ["a", "b"])
            async with openai_client(b) as client:
                answer = await client.chat.completions.create(
                    model="fixture-model", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.choices[0].message.content == "hello from fixture"
                # An alias (another quantization of the same model and size) and the route of
                # one agent by id work the same.
                aliased = await client.chat.completions.create(
                    model="org/llama3:8b-q4_0", messages=[{"role": "user", "content": "hi"}]
                )
                assert aliased.model == "org/llama3:8b"
                models = await client.models.list()
                assert {"fixture-model", "org/llama3:8b"} <= {m.id for m in models.data}
            snapshot = await state(b)
            agent_id = snapshot["plugins"]["llm"]["agents"][0]["id"]
            async with httpx.AsyncClient() as http:
                targeted = await http.post(
                    f"{b.url}/api/llm/id/{agent_id}/v1/chat/completions",
                    json=chat("targeted"),
                    headers=b.headers(),
                )
                health = (await http.get(f"{b.url}/healthz")).json()
            assert targeted.status_code == 200
            assert contents(backend)[-1] == "targeted"
            assert health["status"] == "ok"
            assert (health["instance"], health["redis"], health["instances"]) == ("b", "ok", 2)


async def test_the_agents_status_names_each_instance_it_holds_a_tunnel_to(
    redis_url: str, backend: FixtureBackend, tmp_path: Path
) -> None:
    with trio.fail_after(CAP):
        async with (
            run_instances(redis_url, 2) as (a, _),
            status_agent(a, backend, tmp_path) as agent,
            httpx.AsyncClient(timeout=60) as http,
        ):
            await wait_tunnels(agent.proc, ["a", "b"])
            status = await get_status(http, agent)
            assert status["connected_to_server"] is True
            assert sorted(status["instances"], key=lambda i: i["id"]) == [  # type: ignore[arg-type]
                {"id": "a", "connected": True, "current_jobs": 0},
                {"id": "b", "connected": True, "current_jobs": 0},
            ]


async def test_an_agent_never_runs_more_than_its_capacity_whichever_instances_send_work(
    redis_url: str,
) -> None:
    async with run_backend(models=("fixture-model",)) as backend:
        with trio.fail_after(CAP):
            async with (
                run_instances(redis_url, 2) as (a, b),
                run_agent(a, backend.base_url, env={"MAX_CONCURRENCY": "2"}) as agent,
                httpx.AsyncClient(timeout=60) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                results: list[int] = []

                async def send(server: Server, n: int) -> None:
                    response = await http.post(
                        f"{server.api_base}/chat/completions",
                        json=chat(f"r{n}", hold="go"),
                        headers=server.headers(),
                    )
                    results.append(response.status_code)

                async with trio.open_nursery() as nursery:
                    for n in range(6):
                        nursery.start_soon(send, (a, b)[n % 2], n)
                    await chats(backend, 2)
                    # Four wait: two on each instance, whatever either thinks it could send.
                    await wait_state(a, lambda s: queue_length(s) == 4)
                    await wait_state(b, lambda s: queue_length(s) == 4)
                    backend.release("go")
                assert results == [200] * 6
                assert len(contents(backend)) == 6
                assert peak_concurrency(backend) == 2
                # Each instance publishes its counts with its heartbeat: the fleet view adds
                # them up (each agent once, with the instances it is attached to).
                snapshot = await wait_state(
                    b, lambda s: s["plugins"]["llm"]["agents"][0]["processed_total"] == 6
                )
                (seen,) = snapshot["plugins"]["llm"]["agents"]
                assert seen["instances"] == ["a", "b"]
                assert seen["failures_total"] == 0
                assert [i["id"] for i in snapshot["instances"]] == ["a", "b"]


async def test_the_queue_is_one_fifo_across_instances(redis_url: str) -> None:
    async with run_backend(models=("fixture-model",)) as backend:
        with trio.fail_after(CAP):
            async with (
                run_instances(redis_url, 2) as (a, b),
                run_agent(a, backend.base_url) as agent,
                httpx.AsyncClient(timeout=60) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                await wait_attached([a, b], ["a", "b"])
                positions: dict[str, int] = {}

                async def send(server: Server, content: str, hold: str) -> None:
                    response = await http.post(
                        f"{server.api_base}/chat/completions",
                        json=chat(content, hold=hold),
                        headers=server.headers(),
                    )
                    assert response.status_code == 200, response.text

                async def stream(server: Server, content: str) -> None:
                    body = {**chat(content), "stream": True}
                    async with http.stream(
                        "POST",
                        f"{server.api_base}/chat/completions",
                        json=body,
                        headers=server.headers(),
                    ) as response:
                        assert response.status_code == 200
                        async for line in response.aiter_lines():
                            if line.startswith(": nfrx.queue ") and content not in positions:
                                event = json.loads(line.removeprefix(": nfrx.queue "))
                                positions[content] = event["position"]

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, a, "busy", "go")
                    await arrived(backend, "busy")
                    nursery.start_soon(stream, b, "first (on b)")
                    await wait_state(a, lambda s: queue_length(s) == 1)
                    nursery.start_soon(stream, a, "second (on a)")
                    await wait_state(b, lambda s: queue_length(s) == 2)
                    backend.release("go")
                assert contents(backend) == ["busy", "first (on b)", "second (on a)"]
                assert positions == {"first (on b)": 1, "second (on a)": 2}


async def test_retries_and_embedding_splits_use_agents_that_dialled_other_instances(
    redis_url: str,
) -> None:
    async with (
        run_backend(models=("fixture-model",), gate=True) as broken,
        run_backend(models=("fixture-model",)) as working,
    ):
        with trio.fail_after(CAP):
            async with (
                run_instances(redis_url, 2) as (a, b),
                run_agent(a, broken.base_url, name="broken") as first,
                run_agent(
                    b, working.base_url, name="working", env={"EMBEDDING_BATCH_SIZE": "1"}
                ) as second,
                httpx.AsyncClient(timeout=30) as http,
            ):
                await wait_tunnels(first, ["a", "b"])
                await wait_tunnels(second, ["a", "b"])
                # Split first (both agents answer), then the broken one's backend goes away:
                # a request it takes fails before any byte and is retried on the other.
                embeddings = await http.post(
                    f"{b.api_base}/embeddings",
                    json={"model": "fixture-model", "input": ["w", "x", "y", "z"]},
                    headers=b.headers(),
                )
                assert embeddings.status_code == 200, embeddings.text
                assert [d["index"] for d in embeddings.json()["data"]] == [0, 1, 2, 3]
                await broken.refuse_connections()
                for n in range(4):
                    answer = await http.post(
                        f"{(a, b)[n % 2].api_base}/chat/completions",
                        json=chat(f"retry {n}"),
                        headers=a.headers(),
                    )
                    assert answer.status_code == 200, answer.text
                assert [c for c in contents(working) if c.startswith("retry")] == [
                    f"retry {n}" for n in range(4)
                ]


async def test_a_docling_task_is_polled_through_any_instance(redis_url: str) -> None:
    async with run_docling("docling-a") as docling:
        with trio.fail_after(CAP):
            async with (
                run_instances(redis_url, 2) as (a, b),
                run_plugin_agent(a, "docling", {"DOC_BASE_URL": docling.base_url}) as agent,
                httpx.AsyncClient(timeout=30) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                submitted = await http.post(
                    f"{a.url}/api/docling/v1/convert/source/async",
                    json={"n": 1},
                    headers=a.headers(),
                )
                assert submitted.status_code == 200, submitted.text
                task_id = submitted.json()["task_id"]
                poll = await http.get(
                    f"{b.url}/api/docling/v1/status/poll/{task_id}", headers=b.headers()
                )
                assert poll.status_code == 200, poll.text
                assert poll.json()["instance"] == "docling-a"
                unknown = await http.get(f"{b.url}/api/docling/v1/result/nope", headers=b.headers())
                assert unknown.status_code == 404
                assert unknown.json()["error"]["code"] == "task_not_found"


def relay_ready(snapshot: dict[str, Any]) -> bool:
    """The state shows an MCP relay, and every relay ready (its provider reachable)."""
    relays = snapshot["plugins"]["mcp"]["agents"]
    return bool(relays) and all(r["status"] in ("idle", "working") for r in relays)


async def test_an_mcp_session_created_through_one_instance_works_through_another(
    redis_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2) as (a, b):
            env = agent_env(a, "words", "stdio", None, tmp_path / "events.txt")
            async with (
                run_plugin_agent(a, "mcp", env) as agent,
                httpx.AsyncClient(timeout=30) as http,
            ):
                await wait_tunnels(agent, ["a", "b"])
                await agent.wait_for_line(r"backend ready")
                # The agent logs that line as it tells each instance: wait until both heard.
                for server in (a, b):
                    await wait_state(server, relay_ready)
                headers = {**MCP_ACCEPT, **a.headers()}
                opened = await http.post(
                    f"{a.url}/api/mcp/id/words", json=MCP_INIT, headers=headers
                )
                assert opened.status_code == 200, opened.text
                session = opened.headers["mcp-session-id"]
                listed = await http.post(
                    f"{b.url}/api/mcp/id/words",
                    json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                    headers={**headers, "Mcp-Session-Id": session},
                )
                assert listed.status_code == 200, listed.text
                assert '"tools"' in listed.text
                stranger = await http.post(
                    f"{b.url}/api/mcp/id/words",
                    json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                    headers={**headers, "Mcp-Session-Id": "not-a-session"},
                )
                assert stranger.status_code == 404
                assert stranger.json()["error"]["data"]["nfrx"]["code"] == "MCP_SESSION_NOT_FOUND"
