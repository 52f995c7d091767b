"""The other OpenAI routes and the agent-targeted routes (``/api/llm/id/{agent}/v1/...``)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.harness import NfrxProcess, Server, run_agent
from tests.fixtures.backend import FixtureBackend, run_backend

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_completions_embeddings_and_responses(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
        completion = await c.completions.create(model="fixture-model", prompt="hi")
        assert completion.object == "text_completion"
        embeddings = await c.embeddings.create(model="fixture-model", input=["a", "bbb"])
        assert [e.index for e in embeddings.data] == [0, 1]
        assert [e.embedding[0] for e in embeddings.data] == [1.0, 3.0]
        response = await c.responses.create(model="fixture-model", input="hi")
        assert response.output_text == "hello from fixture"
        stream = await c.responses.create(model="fixture-model", input="hi", stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    paths = [r.path for r in backend.requests if r.method == "POST"]
    assert paths[-4:] == ["/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/responses"]


async def test_targeted_routes_reach_only_that_agent(server: Server) -> None:
    async with (
        run_backend(models=("shared",)) as first,
        run_backend(models=("shared", "only-b")) as second,
        run_agent(server, first.base_url, name="alpha", env={"CLIENT_ID": "a1"}),
        run_agent(server, second.base_url, name="beta", env={"CLIENT_ID": "b1"}),
    ):
        base_b = f"{server.url}/api/llm/id/b1/v1"
        async with openai.AsyncOpenAI(base_url=base_b, api_key="ak", max_retries=0) as c:
            for _ in range(3):
                await c.chat.completions.create(model="shared", messages=MESSAGES)  # type: ignore[arg-type]
            listed = await c.models.list()
            assert [(m.id, m.owned_by) for m in listed.data] == [
                ("only-b", "beta"),
                ("shared", "beta"),
            ]
            assert (await c.models.retrieve("only-b")).owned_by == "beta"
        chats = lambda b: [r for r in b.requests if r.path == "/v1/chat/completions"]  # noqa: E731
        assert len(chats(second)) == 3
        assert chats(first) == []
        async with httpx.AsyncClient() as http:
            headers = server.headers()
            r = await http.get(f"{server.url}/api/llm/id/a1/v1/models/only-b", headers=headers)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "model_not_found"
            r = await http.post(
                f"{server.url}/api/llm/id/a1/v1/chat/completions",
                json={"model": "only-b", "messages": MESSAGES},
                headers=headers,
            )
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "model_not_found"
            for url in (
                f"{server.url}/api/llm/id/nobody/v1/models",
                f"{server.url}/api/llm/id/nobody/v1/models/shared",
            ):
                r = await http.get(url, headers=headers)
                assert r.status_code == 404
                assert r.json()["error"]["code"] == "agent_not_found"
            r = await http.post(
                f"{server.url}/api/llm/id/nobody/v1/chat/completions",
                json={"model": "shared", "messages": MESSAGES},
                headers=headers,
            )
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "agent_not_found"


async def test_alias_fallback_rewrites_the_model(server: Server) -> None:
    async with (
        run_backend(models=("llama3:8b-q4_0",)) as backend,
        run_agent(server, backend.base_url),
        openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c,
    ):
        reply = await c.chat.completions.create(model="llama3:8b", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.model == "llama3:8b-q4_0"
        assert backend.requests[-1].json()["model"] == "llama3:8b-q4_0"
        with pytest.raises(openai.NotFoundError):
            await c.chat.completions.create(model="llama3:70b", messages=MESSAGES)  # type: ignore[arg-type]


async def test_aliasing_can_be_turned_off(backend: FixtureBackend) -> None:
    from tests.e2e.harness import run_server

    async with (
        run_server(env={"LLM_MIN_SCORE": "1"}) as server,
        run_backend(models=("llama3:8b-q4_0",)) as quantized,
        run_agent(server, quantized.base_url),
        httpx.AsyncClient() as http,
    ):
        r = await http.post(
            server.api_base + "/chat/completions",
            json={"model": "llama3:8b", "messages": MESSAGES},
            headers=server.headers(),
        )
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found"


async def test_token_usage_is_counted_from_json_and_event_streams(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as c:
        start = len(server.proc.lines)
        await c.chat.completions.create(
            model="fixture-model",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"X-Request-Id": "plain"},
        )
        await server.proc.wait_for_line(
            r"POST /api/llm/v1/chat/completions model=fixture-model .* "
            r"tokens_in=3 tokens_out=[1-9]\d* request_id=plain",
            start=start,
        )
        stream = await c.chat.completions.create(
            model="fixture-model",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fixture": {"events": 5}},
            extra_headers={"X-Request-Id": "streamed"},
        )
        async for _ in stream:
            pass
        await server.proc.wait_for_line(
            r"tokens_in=3 tokens_out=[1-9]\d* request_id=streamed", start=start
        )
