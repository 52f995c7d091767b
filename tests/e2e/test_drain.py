"""SIGTERM on the server drains: new requests get 503, in-flight ones finish, exit status 0."""

from __future__ import annotations

import signal

import httpx
import trio

from tests.e2e.harness import run_agent, run_server
from tests.fixtures.backend import FixtureBackend

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_server_drains_on_sigterm(backend: FixtureBackend) -> None:
    async with (
        run_server() as server,
        run_agent(server, backend.base_url, env={"MAX_CONCURRENCY": "2"}),
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
            health = await http.get(server.url + "/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "draining"
            rest = b"".join([c async for c in chunks])
        # The request that was in flight completed normally.
        assert rest.count(b'"content": "tok') == 19
        assert rest.endswith(b"data: [DONE]\n\n")
        with trio.fail_after(10):
            assert await server.proc.wait_exit() == 0
