"""A client that leaves cancels the backend request, and the agent's slot is free at once."""

from __future__ import annotations

import httpx
import trio

from tests.e2e.harness import Server, run_agent
from tests.fixtures.backend import FixtureBackend, run_backend

MESSAGES = [{"role": "user", "content": "hi"}]
BOUND = 5.0  # generous: the target is well under 50 ms, this only says "promptly, no hang"


async def test_disconnect_mid_stream_closes_backend_connection(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, env={"MAX_CONCURRENCY": "1"}):
        body = {
            "model": "fixture-model",
            "stream": True,
            "messages": MESSAGES,
            "fixture": {"events": 10_000, "interval": 0.02},
        }
        async with httpx.AsyncClient() as http:
            async with http.stream(
                "POST", server.api_base + "/chat/completions", json=body, headers=server.headers()
            ) as r:
                async for chunk in r.aiter_bytes():
                    if b"tok" in chunk:
                        break
            left_at = trio.current_time()
            recorded = backend.requests[-1]
            with trio.fail_after(BOUND):
                await recorded.done.wait()
            assert recorded.disconnected
            assert recorded.finished_at is not None
            print(f"backend saw the close {1000 * (recorded.finished_at - left_at):.1f} ms later")
            # The capacity-1 agent takes the next request straight away.
            with trio.fail_after(BOUND):
                r2 = await http.post(
                    server.api_base + "/chat/completions",
                    json={"model": "fixture-model", "messages": MESSAGES},
                    headers=server.headers(),
                )
            assert r2.status_code == 200


async def test_disconnect_before_first_byte_closes_backend_connection(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, env={"MAX_CONCURRENCY": "1"}):
        body = {"model": "fixture-model", "messages": MESSAGES, "fixture": {"hang": True}}
        async with httpx.AsyncClient() as http:
            seen = len(backend.requests)
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    await http.post(
                        server.api_base + "/chat/completions", json=body, headers=server.headers()
                    )

                nursery.start_soon(call)
                recorded = await backend.wait_for_request(seen + 1)
                nursery.cancel_scope.cancel()  # the client gives up before any byte came back
            with trio.fail_after(BOUND):
                await recorded.done.wait()
            assert recorded.disconnected
            with trio.fail_after(BOUND):
                r2 = await http.post(
                    server.api_base + "/chat/completions",
                    json={"model": "fixture-model", "messages": MESSAGES},
                    headers=server.headers(),
                )
            assert r2.status_code == 200


async def test_server_deadline_cancels_backend_request(backend: FixtureBackend) -> None:
    from tests.e2e.harness import run_server

    async with (
        run_server(env={"REQUEST_TIMEOUT": "1"}) as server,
        run_agent(server, backend.base_url),
        httpx.AsyncClient() as http,
    ):
        body = {"model": "fixture-model", "messages": MESSAGES, "fixture": {"hang": True}}
        r = await http.post(
            server.api_base + "/chat/completions", json=body, headers=server.headers()
        )
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"
        recorded = backend.requests[-1]
        with trio.fail_after(BOUND):
            await recorded.done.wait()
        assert recorded.disconnected


async def test_server_deadline_mid_stream_ends_with_error_event(backend: FixtureBackend) -> None:
    from tests.e2e.harness import run_server

    async with (
        run_server(env={"REQUEST_TIMEOUT": "1"}) as server,
        run_agent(server, backend.base_url),
        httpx.AsyncClient() as http,
    ):
        body = {
            "model": "fixture-model",
            "stream": True,
            "messages": MESSAGES,
            "fixture": {"events": 10_000, "interval": 0.05},
        }
        r = await http.post(
            server.api_base + "/chat/completions", json=body, headers=server.headers()
        )
        assert r.status_code == 200
        text = r.text
        assert text.count("tok") > 0
        last = text.strip().split("\n\n")[-1]
        assert last.startswith("event: error\ndata: ")
        assert '"code": "timeout"' in last
        recorded = backend.requests[-1]
        with trio.fail_after(BOUND):
            await recorded.done.wait()
        assert recorded.disconnected


async def agent_counts(http: httpx.AsyncClient, server: Server) -> tuple[int, int, int]:
    """(processed, failures, cancelled) of the only LLM agent, from /api/state."""
    state = (await http.get(server.url + "/api/state", headers=server.headers())).json()
    [agent] = state["plugins"]["llm"]["agents"]
    return agent["processed_total"], agent["failures_total"], agent["cancelled_total"]


async def metric(http: httpx.AsyncClient, server: Server, outcome: str) -> float:
    text = (await http.get(server.url + "/metrics")).text
    prefix = f'nfrx_model_requests_total{{model="fixture-model",outcome="{outcome}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_a_client_that_gives_up_is_counted_as_cancelled_not_as_a_failure(
    server: Server,
) -> None:
    async with (
        run_backend(gate=True) as backend,
        run_agent(server, backend.base_url),
        httpx.AsyncClient() as http,
    ):
        # Mid-stream: the client reads the first token and leaves.
        body = {
            "model": "fixture-model",
            "stream": True,
            "messages": MESSAGES,
            "fixture": {"events": 10_000, "interval": 0.02},
        }
        headers = {**server.headers(), "X-Request-Id": "leaves-mid-stream"}
        async with http.stream(
            "POST", server.api_base + "/chat/completions", json=body, headers=headers
        ) as r:
            async for chunk in r.aiter_bytes():
                if b"tok" in chunk:
                    break
        line = await server.proc.wait_for_line(r"request_id=leaves-mid-stream\b")
        assert " status=200 " in line.string
        assert line.string.endswith("(cancelled by client)"), line.string
        assert await agent_counts(http, server) == (0, 0, 1)

        # Before the first byte: its own timeout.
        hang = {"model": "fixture-model", "messages": MESSAGES, "fixture": {"hang": True}}
        seen = len(backend.requests)
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                await http.post(
                    server.api_base + "/chat/completions",
                    json=hang,
                    headers={**server.headers(), "X-Request-Id": "gives-up"},
                )

            nursery.start_soon(call)
            await backend.wait_for_request(seen + 1)
            nursery.cancel_scope.cancel()
        line = await server.proc.wait_for_line(r"request_id=gives-up\b")
        assert "status=- " in line.string
        assert line.string.endswith("(cancelled by client)"), line.string
        assert await agent_counts(http, server) == (0, 0, 2)
        assert await metric(http, server, "cancelled") == 2
        assert await metric(http, server, "error") == 0

        # The backend failing mid-answer is the agent's failure.
        body["fixture"] = {"events": 1, "hold": "never"}
        headers["X-Request-Id"] = "backend-dies"
        async with http.stream(
            "POST", server.api_base + "/chat/completions", json=body, headers=headers
        ) as r:
            chunks = r.aiter_text()
            assert "tok0" in await chunks.__anext__()
            await backend.refuse_connections()  # the backend crashes mid-answer
            rest = "".join([text async for text in chunks])
        assert "event: error" in rest
        line = await server.proc.wait_for_line(r"request_id=backend-dies\b")
        assert line.string.endswith("(failed)"), line.string
        assert await agent_counts(http, server) == (0, 1, 2)
        assert await metric(http, server, "error") == 1
