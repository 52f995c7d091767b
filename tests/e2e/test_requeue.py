"""Requeue: a request whose agent fails before any byte reached the client goes to another agent.

The failure is real: the first agent's backend stops listening (connection refused), or the first
agent process is killed while it holds the request. Which of two equal agents a request goes to
is round-robin, so two consecutive requests exercise both.
"""

from __future__ import annotations

import signal

import httpx
import trio

from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

CHAT = {"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]}


async def _serve_backend(
    *, task_status: trio.TaskStatus[FixtureBackend] = trio.TASK_STATUS_IGNORED
) -> None:
    async with run_backend() as backend:
        task_status.started(backend)
        await trio.sleep_forever()


async def stoppable_backend(nursery: trio.Nursery) -> tuple[FixtureBackend, trio.CancelScope]:
    """A fixture backend that stops listening (for good) when the returned scope is cancelled."""
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[FixtureBackend]) -> None:
        with scope:
            await _serve_backend(task_status=task_status)

    backend: FixtureBackend = await nursery.start(run)
    return backend, scope


def chats(backend: FixtureBackend) -> int:
    return sum(1 for r in backend.requests if r.path == "/v1/chat/completions")


async def test_a_request_whose_backend_is_unreachable_is_served_by_another_agent(
    server: Server,
) -> None:
    async with trio.open_nursery() as nursery, run_backend() as healthy:
        doomed, stop = await stoppable_backend(nursery)
        async with (
            run_agent(server, doomed.base_url, name="doomed"),
            run_agent(server, healthy.base_url, name="healthy"),
            httpx.AsyncClient(timeout=30) as http,
        ):
            stop.cancel()  # the doomed agent still believes its backend is up
            for _ in range(2):
                response = await http.post(
                    f"{server.api_base}/chat/completions", json=CHAT, headers=server.headers()
                )
                assert response.status_code == 200, response.text
            assert chats(healthy) == 2
            assert chats(doomed) == 0
            await server.proc.wait_for_line(r"agent doomed failed before answering .*retrying")
        nursery.cancel_scope.cancel()


async def arrived(backend: FixtureBackend) -> None:
    with trio.fail_after(20):
        while not chats(backend):
            await backend.wait_for_request(len(backend.requests) + 1)


async def test_a_request_whose_agent_dies_before_answering_is_served_by_another(
    server: Server,
) -> None:
    slow = {**CHAT, "fixture": {"delay": 1.0}}
    async with (
        run_backend() as first_backend,
        run_backend() as second_backend,
        # Equal idle agents: the one connected first gets the first request.
        run_agent(server, first_backend.base_url, name="first") as first,
        run_agent(server, second_backend.base_url, name="second"),
        httpx.AsyncClient(timeout=30) as http,
    ):
        results: list[httpx.Response] = []

        async def send() -> None:
            results.append(
                await http.post(
                    f"{server.api_base}/chat/completions", json=slow, headers=server.headers()
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await arrived(first_backend)
            first.process.send_signal(signal.SIGKILL)
        assert [r.status_code for r in results] == [200], results[0].text
        assert chats(second_backend) == 1
        await server.proc.wait_for_line(r"agent first failed before answering .*retrying")


async def test_retries_are_bounded_then_502() -> None:
    async with (
        run_server(env={"LLM_MAX_RETRIES": "0"}) as server,
        trio.open_nursery() as nursery,
        run_backend() as healthy,
    ):
        doomed, stop = await stoppable_backend(nursery)
        async with (
            run_agent(server, doomed.base_url, name="doomed"),
            run_agent(server, healthy.base_url, name="healthy"),
            httpx.AsyncClient(timeout=30) as http,
        ):
            stop.cancel()
            response = await http.post(
                f"{server.api_base}/chat/completions", json=CHAT, headers=server.headers()
            )
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "upstream_unreachable"
            assert "could not reach its backend" in response.json()["error"]["message"]
            # The next one goes to the other agent.
            response = await http.post(
                f"{server.api_base}/chat/completions", json=CHAT, headers=server.headers()
            )
            assert response.status_code == 200
        nursery.cancel_scope.cancel()
