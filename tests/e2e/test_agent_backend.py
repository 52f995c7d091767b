"""The agent and its backend: down, unhealthy, back again, and model lists that change.

Real ``nfrx serve`` and ``nfrx llm`` processes; the fixture backends run in the test's loop. A
backend that is *unreachable* is one built with ``gate=True`` whose port refuses connections (see
tests/fixtures/backend.py); an *unhealthy* one answers 503 (``backend.down``). Progress is
observed through the server's HTTP API (its model listings and /healthz) and its log lines; the
``fail_after`` limits only turn a hang into a failure.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

pytestmark = pytest.mark.e2e

MODELS = ["fixture-model", "org/llama3:8b"]
AGENT_ID = "alpha-id"
HANG_GUARD = 30.0
"""Seconds after which a wait counts as a hang (recoveries here take well under 3 s)."""
FAST_POLL = "0.2"
SLOW_POLL = "3600"
"""A poll interval no test outlives: any re-probe that happens was asked for."""


def chat(content: str = "hi", **fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fixture-model",
        "messages": [{"role": "user", "content": content}],
    }
    if fixture.pop("stream", False):
        body["stream"] = True
    if fixture:
        body["fixture"] = fixture
    return body


@pytest.fixture
async def gated() -> AsyncIterator[FixtureBackend]:
    async with run_backend(models=MODELS, gate=True) as backend:
        yield backend


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def listed(http: httpx.AsyncClient, server: Server, prefix: str = "") -> dict[str, Any]:
    """The server's model list (``prefix`` "/id/<agent>" for one agent's)."""
    response = await http.get(f"{server.url}/api/llm{prefix}/v1/models", headers=server.headers())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def owners(http: httpx.AsyncClient, server: Server, prefix: str = "") -> dict[str, str]:
    return {m["id"]: m["owned_by"] for m in (await listed(http, server, prefix))["data"]}


async def agents_connected(http: httpx.AsyncClient, server: Server) -> int:
    response = await http.get(f"{server.url}/healthz")
    count: int = response.json()["agents"]["llm"]
    return count


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds; a hang guard, not a timing assertion."""
    # The state lives in another process and is only visible over HTTP: polling is the way.
    with trio.fail_after(HANG_GUARD):
        while not await condition():  # noqa: ASYNC110
            await trio.sleep(0.05)


def listing_is(
    http: httpx.AsyncClient, server: Server, expected: dict[str, str], prefix: str = ""
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await owners(http, server, prefix) == expected

    return check


async def chat_ok(http: httpx.AsyncClient, server: Server) -> None:
    response = await http.post(
        f"{server.api_base}/chat/completions", headers=server.headers(), json=chat()
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from fixture"


# -- unreachable: not_ready with the last known models, then ready again by itself ---------------


@pytest.mark.parametrize("args", [[], ["--reconnect"]], ids=["plain", "reconnect"])
async def test_unreachable_backend_keeps_the_agent_connected_until_it_returns(
    gated: FixtureBackend, http: httpx.AsyncClient, args: list[str]
) -> None:
    async with (
        run_server() as server,
        run_agent(
            server,
            gated.base_url,
            env={"CLIENT_ID": AGENT_ID},
            args=[*args, "--model-poll-interval", FAST_POLL],
        ) as agent,
    ):
        everything = dict.fromkeys(MODELS, "alpha")
        assert await owners(http, server) == everything

        await gated.refuse_connections()
        # Not ready: its models leave the public list, but the agent stays connected and the
        # server still knows what it served (the agent's own listing shows the last known list).
        await wait_until(listing_is(http, server, {}))
        await agent.wait_for_line(r"backend not ready: .*probing it every 0\.2 s")
        assert await agents_connected(http, server) == 1
        assert await owners(http, server, f"/id/{AGENT_ID}") == everything
        await server.proc.wait_for_line(r"llm agent alpha: not_ready, 2 models, capacity 0")

        gated.accept_connections()
        await wait_until(listing_is(http, server, everything))
        await chat_ok(http, server)
        assert agent.process.returncode is None
        assert len([line for line in agent.lines if "connected to " in line]) == 1


async def test_backend_unreachable_from_the_start(
    gated: FixtureBackend, http: httpx.AsyncClient
) -> None:
    await gated.refuse_connections()
    async with (
        run_server() as server,
        run_agent(server, gated.base_url, env={"CLIENT_ID": AGENT_ID}) as agent,
    ):
        # It connects anyway (no --reconnect needed: the server is fine), not ready, and with
        # no models known yet there is nothing to wait for: 404 at once.
        await agent.wait_for_line(r"connected to \S+ as alpha \(alpha-id\): not_ready, 0 model")
        assert await agents_connected(http, server) == 1
        assert await owners(http, server, f"/id/{AGENT_ID}") == {}
        response = await http.post(
            f"{server.api_base}/chat/completions", headers=server.headers(), json=chat()
        )
        assert response.status_code == 404, response.text
        assert gated.requests == []

        # Default poll interval (60 s): a backend that is not ready is re-probed every 2 s.
        gated.accept_connections()
        await wait_until(listing_is(http, server, dict.fromkeys(MODELS, "alpha")))
        await chat_ok(http, server)


async def test_a_request_for_a_not_ready_agent_waits_for_the_backend(
    gated: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with (
        run_server() as server,
        run_agent(server, gated.base_url, args=["--model-poll-interval", FAST_POLL]),
    ):
        await gated.refuse_connections()
        await wait_until(listing_is(http, server, {}))
        answers: list[httpx.Response] = []

        async def ask() -> None:
            answers.append(
                await http.post(
                    f"{server.api_base}/chat/completions",
                    headers={**server.headers(), "X-Request-Id": "patient"},
                    json=chat("patient"),
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            # The agent still announces the model, so the server queues the request instead of
            # answering 404 ...
            await server.proc.wait_for_line(r"request patient for fixture-model queued")
            assert answers == []
            # ... and it is served once the backend is back.
            gated.accept_connections()
        (response,) = answers
        assert response.status_code == 200, response.text
        assert [
            r.json()["messages"][0]["content"] for r in gated.requests if r.method == "POST"
        ] == ["patient"]


# -- failures seen by requests: fail fast, re-probe at once, spare the others --------------------


async def test_unreachable_backend_fails_fast_and_spares_the_request_in_flight(
    gated: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with (
        run_server(env={"LLM_MAX_RETRIES": "0"}) as server,
        run_agent(
            server,
            gated.base_url,
            env={"MAX_CONCURRENCY": "2", "MODEL_POLL_INTERVAL": SLOW_POLL},
        ),
    ):
        long_body = chat("long", stream=True, events=3, hold="long")
        async with http.stream(
            "POST", f"{server.api_base}/chat/completions", headers=server.headers(), json=long_body
        ) as long:
            assert long.status_code == 200
            lines = long.aiter_lines()
            tokens: list[str] = []
            while len(tokens) < 3:
                line = await anext(lines)
                if line.startswith("data: "):
                    tokens.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
            assert tokens == ["tok0", "tok1", "tok2"]

            # The backend stops accepting connections; the long request's stays open.
            await gated.refuse_connections(drop=False)
            response = await http.post(
                f"{server.api_base}/chat/completions", headers=server.headers(), json=chat("short")
            )
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error["code"] == "upstream_unreachable"
            assert gated.base_url not in error["message"]
            # That failure made the agent probe its backend at once (its poll interval is an
            # hour): it is not ready now ...
            await wait_until(listing_is(http, server, {}))

            # ... and the request in flight is untouched: it finishes normally.
            gated.release("long")
            rest = [line async for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[0][6:])["choices"][0]["finish_reason"] == "stop"
        (long_record,) = gated.requests[1:]  # [0] is the agent's first probe
        assert long_record.json()["messages"][0]["content"] == "long"
        assert long_record.done.is_set()
        assert not long_record.disconnected

        # A backend that is not ready is re-probed every 2 s: it comes back by itself.
        gated.accept_connections()
        await wait_until(listing_is(http, server, dict.fromkeys(MODELS, "alpha")))
        await chat_ok(http, server)


async def test_a_5xx_answer_makes_the_agent_probe_its_backend_at_once(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with (
        run_server(env={"LLM_MAX_RETRIES": "0"}) as server,
        run_agent(server, backend.base_url, env={"MODEL_POLL_INTERVAL": SLOW_POLL}),
    ):
        backend.down = True
        response = await http.post(
            f"{server.api_base}/chat/completions", headers=server.headers(), json=chat()
        )
        # The backend's own answer is relayed unchanged ...
        assert response.status_code == 503
        assert response.headers["x-fixture"] == "down"
        # ... and the agent, probing at once, finds it unhealthy.
        await wait_until(listing_is(http, server, {}))
        probes = [r for r in backend.requests if r.path == "/v1/models"]
        assert len(probes) >= 2  # the first one, and the one the 503 asked for

        backend.down = False
        await wait_until(listing_is(http, server, dict.fromkeys(MODELS, "alpha")))
        await chat_ok(http, server)


# -- the model list follows the backend ----------------------------------------------------------


async def test_model_changes_reach_the_server_an_empty_list_too(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with (
        run_server() as server,
        run_agent(
            server,
            backend.base_url,
            env={"CLIENT_ID": AGENT_ID, "MODEL_POLL_INTERVAL": FAST_POLL},
        ),
    ):
        assert await owners(http, server) == dict.fromkeys(MODELS, "alpha")

        backend.models.append("late:2b")
        backend.models.remove("fixture-model")
        await wait_until(listing_is(http, server, {"org/llama3:8b": "alpha", "late:2b": "alpha"}))

        backend.models.clear()
        await wait_until(listing_is(http, server, {}))
        assert await listed(http, server) == {"object": "list", "data": []}
        # Empty is a valid model list, not a failure: the agent is ready and still connected.
        assert await listed(http, server, f"/id/{AGENT_ID}") == {"object": "list", "data": []}
        assert await agents_connected(http, server) == 1
        await server.proc.wait_for_line(r"llm agent alpha: ready, 0 models, capacity 1")
        response = await http.post(
            f"{server.api_base}/chat/completions", headers=server.headers(), json=chat()
        )
        assert response.status_code == 404

        backend.models.append("fixture-model")
        await wait_until(listing_is(http, server, {"fixture-model": "alpha"}))
        await chat_ok(http, server)


# -- EMBEDDING_BATCH_SIZE, as a flag ---------------------------------------------------------------


async def test_embedding_batch_size_flag_limits_the_batches(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with (
        run_server() as server,
        run_agent(
            server,
            backend.base_url,
            env={"EMBEDDING_BATCH_SIZE": "5"},  # the flag wins over the environment
            args=["--embedding-batch-size", "2"],
        ),
    ):
        response = await http.post(
            f"{server.api_base}/embeddings",
            headers=server.headers(),
            json={
                "model": "fixture-model",
                "input": ["a", "bb", "ccc"],
                "encoding_format": "float",
            },
        )
        assert response.status_code == 200, response.text
        assert [d["embedding"][0] for d in response.json()["data"]] == [1.0, 2.0, 3.0]
        batches = [r.json()["input"] for r in backend.requests if r.path == "/v1/embeddings"]
        assert batches == [["a", "bb"], ["ccc"]]
