"""Chat completions and models through real server and agent processes, with real clients.

The backend is the in-process fixture; ``nfrx serve`` and ``nfrx llm`` are real processes.
"""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, run_agent
from tests.fixtures.backend import FixtureBackend

MESSAGES = [{"role": "user", "content": "hi"}]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def _with_seq(body: bytes, old: int, new: int) -> bytes:
    return body.replace(f"chatcmpl-fixture-{old}".encode(), f"chatcmpl-fixture-{new}".encode())


def _seq(backend: FixtureBackend) -> int:
    return len(backend.requests)


async def test_async_sdk_non_streaming(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
        reply = await c.chat.completions.create(model="fixture-model", messages=MESSAGES)
    assert reply.choices[0].message.content == "hello from fixture"
    assert reply.usage is not None
    assert reply.usage.total_tokens == 7
    assert backend.requests[-1].path == "/v1/chat/completions"


async def test_async_sdk_streaming(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
        stream = await c.chat.completions.create(
            model="fixture-model",
            messages=MESSAGES,
            stream=True,
            extra_body={"fixture": {"events": 5}},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "tok0tok1tok2tok3tok4"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


async def test_sync_sdk_streaming_and_not(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    def use_sync_client() -> tuple[str, str]:
        with openai.OpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
            reply = c.chat.completions.create(model="org/llama3:8b", messages=MESSAGES)
            stream = c.chat.completions.create(
                model="org/llama3:8b", messages=MESSAGES, stream=True
            )
            text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
            return reply.choices[0].message.content or "", text

    plain, streamed = await trio.to_thread.run_sync(use_sync_client)
    assert plain == "hello from fixture"
    assert streamed == "tok0tok1tok2"
    assert [json.loads(r.body)["model"] for r in backend.requests[-2:]] == ["org/llama3:8b"] * 2


async def test_models_list_and_retrieve(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
        listed = await c.models.list()
        assert [m.id for m in listed.data] == ["fixture-model", "org/llama3:8b"]
        assert all(m.owned_by == "alpha" for m in listed.data)
        model = await c.models.retrieve("org/llama3:8b")
        assert model.id == "org/llama3:8b"
        assert model.owned_by == "alpha"
        assert model.created > 0
        again = await c.models.retrieve("org/llama3:8b")
        assert again.created == model.created  # stable
        with pytest.raises(openai.NotFoundError) as info:
            await c.models.retrieve("no-such:model")
    assert info.value.status_code == 404
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"


async def test_models_empty_is_an_empty_list(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(server.api_base + "/models", headers=server.headers())
    assert r.status_code == 200
    assert r.json() == {"object": "list", "data": []}


async def test_models_union_over_agents(server: Server, backend: FixtureBackend) -> None:
    async with (
        run_agent(server, backend.base_url, name="beta"),
        run_agent(server, backend.base_url, name="alpha"),
        httpx.AsyncClient() as http,
    ):
        r = await http.get(server.api_base + "/models", headers=server.headers())
    data = r.json()["data"]
    assert [m["id"] for m in data] == ["fixture-model", "org/llama3:8b"]
    assert {m["owned_by"] for m in data} == {"alpha,beta"}


async def test_non_streaming_response_is_byte_identical(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    body = json.dumps({"model": "fixture-model", "messages": MESSAGES}).encode()
    async with httpx.AsyncClient() as http:
        direct = await http.post(
            backend.base_url + "/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        )
        direct_seq = _seq(backend)
        relayed = await http.post(
            server.api_base + "/chat/completions",
            content=body,
            headers={"content-type": "application/json", **server.headers()},
        )
    assert relayed.status_code == direct.status_code == 200
    assert relayed.content == _with_seq(direct.content, direct_seq, _seq(backend))
    for name in ("content-type", "content-length", "x-fixture"):
        assert relayed.headers[name] == direct.headers[name]
    assert not HOP_BY_HOP & {k.lower() for k in relayed.headers if k.lower() != "connection"}


async def test_streaming_response_is_byte_identical(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    body = json.dumps(
        {"model": "fixture-model", "stream": True, "messages": MESSAGES, "fixture": {"events": 7}}
    ).encode()
    async with httpx.AsyncClient() as http:
        direct = await http.post(backend.base_url + "/chat/completions", content=body)
        direct_seq = _seq(backend)
        relayed = await http.post(
            server.api_base + "/chat/completions", content=body, headers=server.headers()
        )
    assert relayed.status_code == 200
    assert relayed.headers["content-type"].startswith("text/event-stream")
    assert relayed.headers["cache-control"] == "no-store"
    assert relayed.content == _with_seq(direct.content, direct_seq, _seq(backend))


async def test_request_reaches_backend_byte_identical_without_client_secrets(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, env={"COMPLETION_API_KEY": "backend-key"}):
        # Odd spacing, key order and non-ASCII text: forwarded exactly as sent.
        body = (
            b'{ "messages":[{"content":"h\xc3\xa9llo \\u00e9","role":"user"}],'
            b'  "model" : "fixture-model" ,"fixture":{"echo_headers":true}}'
        )
        async with httpx.AsyncClient() as http:
            r = await http.post(
                server.api_base + "/chat/completions",
                content=body,
                headers={
                    "content-type": "application/json",
                    "cookie": "session=secret",
                    "x-api-key": "ak",
                    "x-request-id": "req-123",
                    **server.headers(),
                },
            )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-123"
    recorded = backend.requests[-1]
    assert recorded.body == body
    seen = r.json()["fixture_headers"]
    assert seen["authorization"] == "Bearer backend-key"
    assert "cookie" not in seen
    assert "x-api-key" not in seen
    assert seen["x-request-id"] == "req-123"
    assert seen["content-type"] == "application/json"


async def test_request_id_is_generated_when_absent(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            server.api_base + "/chat/completions",
            json={"model": "fixture-model", "messages": MESSAGES},
            headers=server.headers(),
        )
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert backend.requests[-1].headers["x-request-id"] == r.headers["x-request-id"]


async def test_events_are_flushed_as_they_arrive(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    body = {
        "model": "fixture-model",
        "stream": True,
        "messages": MESSAGES,
        "fixture": {"events": 6, "interval": 0.05},
    }
    arrivals: list[bytes] = []
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST", server.api_base + "/chat/completions", json=body, headers=server.headers()
        ) as r,
    ):
        async for chunk in r.aiter_bytes():
            if not arrivals:
                # The first event reached the client while the backend was still generating:
                # nothing in the relay buffered the stream.
                assert backend.requests[-1].finished_at is None
            arrivals.append(chunk)
    token = b'"content": "tok'
    assert b"".join(arrivals).count(token) == 6
    assert len([a for a in arrivals if token in a]) >= 6  # one read per paced event
