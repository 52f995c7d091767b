"""Every failure a client can meet answers with a status and a JSON body, and never hangs."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

MESSAGES = [{"role": "user", "content": "hi"}]


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    return error


async def post(
    server: Server, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        with trio.fail_after(10):
            return await http.post(
                server.api_base + "/chat/completions",
                headers={**server.headers(), **(headers or {})},
                **kwargs,
            )


async def test_unknown_model_is_404_at_once(server: Server, agent: NfrxProcess) -> None:
    r = await post(server, json={"model": "gpt-nope", "messages": MESSAGES})
    error = assert_error(r, 404, "model_not_found")
    assert "gpt-nope" in error["message"]
    async with openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="gpt-nope", messages=MESSAGES)  # type: ignore[arg-type]


async def test_no_agent_at_all_is_404(server: Server) -> None:
    assert_error(await post(server, json={"model": "m", "messages": []}), 404, "model_not_found")


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": 42}', "missing_model"),
        (b'{"model": ""}', "missing_model"),
        (b"", "invalid_json"),
    ],
)
async def test_bad_bodies_are_400(server: Server, content: bytes, code: str) -> None:
    r = await post(server, content=content, headers={"content-type": "application/json"})
    assert_error(r, 400, code)


async def test_body_over_the_limit_is_413(backend: FixtureBackend) -> None:
    async with (
        run_server(env={"MAX_REQUEST_BYTES": "1000"}) as server,
        run_agent(server, backend.base_url),
    ):
        big = {"model": "fixture-model", "messages": [{"role": "user", "content": "x" * 2000}]}
        assert_error(await post(server, json=big), 413, "request_too_large")
        small = {"model": "fixture-model", "messages": MESSAGES}
        assert (await post(server, json=small)).status_code == 200


async def test_backend_unreachable_is_502_naming_it_only_in_the_log(server: Server) -> None:
    stop, stopped = trio.Event(), trio.Event()

    async def doomed_backend(*, task_status: trio.TaskStatus[str]) -> None:
        async with run_backend() as doomed:
            task_status.started(doomed.base_url)
            await stop.wait()
        stopped.set()

    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(doomed_backend)
        async with run_agent(server, url):
            stop.set()
            await stopped.wait()
            # The backend is gone (its port is closed); the agent still announces its model.
            r = await post(server, json={"model": "fixture-model", "messages": MESSAGES})
            error = assert_error(r, 502, "upstream_unreachable")
            # The client learns neither the agent's words nor the backend's address; the
            # operator's log has them under the request id the client was given.
            request_id = error["message"].rpartition("request id ")[2].rstrip(")")
            assert error["message"] == (
                f"the agent could not reach its backend (request id {request_id})"
            )
            await server.proc.wait_for_line(
                rf"WARNING .*cannot reach the backend at {re.escape(url)}.*"
                rf"request_id={request_id}$"
            )


async def test_backend_error_status_passes_through(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    body = {
        "model": "fixture-model",
        "messages": MESSAGES,
        "fixture": {"status": 503, "error_body": {"error": "backend overloaded"}},
    }
    r = await post(server, json=body)
    assert r.status_code == 503
    assert r.json() == {"error": "backend overloaded"}
    assert r.headers["x-fixture"] == "error"


async def test_backend_400_on_stream_request_stays_a_400(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    body = {
        "model": "fixture-model",
        "stream": True,
        "messages": MESSAGES,
        "fixture": {"status": 400},
    }
    r = await post(server, json=body)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")


async def test_unknown_route_and_method_are_json(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(server.url + "/api/llm/v1/nope", headers=server.headers())
        assert_error(r, 404, "not_found")
        r = await http.get(server.api_base + "/chat/completions", headers=server.headers())
        assert_error(r, 405, "method_not_allowed")
