"""The LLM plugin's server side in process (:mod:`nfrx.plugins.llm.server`): OpenAI- and
Anthropic-compatible routes relayed to scripted agents on in-memory tunnels."""

from __future__ import annotations

import json

import pytest
import trio

from nfrx.plugins.llm.server import QUEUE_EVENTS_HEADER, parse_body, rewrite_model
from nfrx.server.http_errors import HttpError
from nfrx.transport.streams import IncomingStream
from tests.server.app_harness import Seen, answer, serve_app

COMPLETION = {"id": "c1", "object": "chat.completion", "choices": [], "usage": None}


async def test_a_completion_is_relayed_byte_for_byte() -> None:
    body = b'{"model": "m1",  "messages": [{"role": "user", "content": "hi"}]}'
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, COMPLETION), models=("m1",))
        response = await client.post(
            "/api/llm/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", "X-Request-Id": "req-1"},
        )
    assert response.status_code == 200
    assert response.json() == COMPLETION
    assert response.headers["x-request-id"] == "req-1"
    [seen] = app.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/chat/completions", body)
    assert seen.headers["x-request-id"] == "req-1"
    assert "authorization" not in seen.headers  # the API key stays on the server


async def test_an_alias_reaches_the_agent_under_its_own_model_id() -> None:
    """Another quantization of the same model and size serves it, named as the agent names it."""
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, COMPLETION), models=("llama3:8b-q4_0",))
        response = await client.post(
            "/api/llm/v1/completions", json={"model": "llama3:8b", "prompt": "x"}
        )
    assert response.status_code == 200
    assert app.seen[0].json() == {"model": "llama3:8b-q4_0", "prompt": "x"}


async def test_an_event_stream_reaches_the_client_as_the_agent_sends_it() -> None:
    """Each event is relayed when it comes: the agent sends the second one only after the client
    has read the first."""
    first_read = trio.Event()

    async def streaming(stream: IncomingStream, seen: Seen) -> None:
        await stream.send_response(200, (("content-type", "text/event-stream"),))
        await stream.send_data(b'data: {"n": 1}\n\n')
        await first_read.wait()
        await stream.send_data(b"data: [DONE]\n\n", end=True)

    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", streaming, models=("m1",))
        request = {"model": "m1", "stream": True, "messages": []}
        async with client.stream("POST", "/api/llm/v1/chat/completions", json=request) as events:
            assert events.status_code == 200
            lines = events.aiter_lines()
            assert await anext(lines) == 'data: {"n": 1}'
            first_read.set()
            rest = [line async for line in lines]
    assert "data: [DONE]" in rest


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{", "invalid_json", "the request body is not valid JSON"),
        (b"[1]", "invalid_body", "the request body must be a JSON object"),
        (b'{"model": ""}', "missing_model", "the request body needs a 'model'"),
    ],
)
async def test_a_body_without_a_model_is_refused(body: bytes, code: str, message: str) -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, COMPLETION), models=("m1",))
        response = await client.post("/api/llm/v1/chat/completions", content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (code, "invalid_request_error")
    assert error["message"].startswith(message)
    assert app.seen == []


async def test_an_unknown_model_is_404_and_anthropic_clients_get_their_shape() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, COMPLETION), models=("m1",))
        openai = await client.post("/api/llm/v1/chat/completions", json={"model": "nope"})
        anthropic = await client.post("/api/llm/v1/messages", json={"model": "nope"})
    assert openai.status_code == anthropic.status_code == 404
    assert openai.json()["error"]["code"] == "model_not_found"
    assert anthropic.json() == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "the model 'nope' does not exist: no connected agent serves it",
        },
    }


async def test_a_targeted_route_serves_only_its_agent() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, COMPLETION), models=("m1",))
        await app.agent("llm", "a2", answer(200, COMPLETION), models=("m1",))
        for _ in range(3):
            response = await client.post("/api/llm/id/a2/v1/chat/completions", json={"model": "m1"})
            assert response.status_code == 200
        missing = await client.post("/api/llm/id/zz/v1/chat/completions", json={"model": "m1"})
    assert [seen.agent for seen in app.seen] == ["a2", "a2", "a2"]
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "no llm agent with id 'zz' is connected",
        "type": "invalid_request_error",
        "code": "agent_not_found",
    }


async def test_a_queue_event_style_the_server_does_not_know_is_refused() -> None:
    async with serve_app() as app, app.client() as client:
        response = await client.post(
            "/api/llm/v1/chat/completions",
            json={"model": "m1", "stream": True},
            headers={QUEUE_EVENTS_HEADER: "loud"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_header"
    assert "comments, events" in response.json()["error"]["message"]


def test_parse_body_keeps_the_cause_of_invalid_json() -> None:
    with pytest.raises(HttpError) as caught:
        parse_body(b"{")
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_rewrite_model_changes_only_the_model() -> None:
    rewritten = rewrite_model('{"model": "a", "x": "é"}'.encode(), "b")
    assert json.loads(rewritten) == {"model": "b", "x": "é"}
