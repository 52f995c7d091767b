"""The Anthropic-compatible ``/v1/messages`` route, driven by the official ``anthropic`` SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.e2e.harness import NfrxProcess, Server
from tests.fixtures.backend import FixtureBackend

MESSAGES = [{"role": "user", "content": "hi"}]


def client(server: Server, key: str | None = None) -> anthropic.AsyncAnthropic:
    # The SDK sends the key as X-Api-Key and appends /v1/messages to the base URL.
    return anthropic.AsyncAnthropic(
        base_url=f"{server.url}/api/llm", api_key=key or server.api_key, max_retries=0
    )


async def test_messages_stream_and_not(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with client(server) as c:
        message = await c.messages.create(
            model="fixture-model",
            max_tokens=16,
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"anthropic-beta": "fixture-beta"},
        )
        assert message.type == "message"
        assert message.content[0].type == "text"
        assert message.usage.output_tokens > 0
        async with c.messages.stream(
            model="fixture-model",
            max_tokens=16,
            messages=MESSAGES,  # type: ignore[arg-type]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
        assert text
        assert final.stop_reason == "end_turn"
    sent = [r for r in backend.requests if r.path == "/v1/messages"]
    assert len(sent) == 2
    headers = sent[0].headers
    # The relay key stays on the server; the Anthropic headers reach the backend.
    assert "x-api-key" not in headers
    assert "authorization" not in headers
    assert headers["anthropic-version"]
    assert headers["anthropic-beta"] == "fixture-beta"


async def test_relay_errors_on_messages_have_the_anthropic_shape(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with client(server) as c:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await c.messages.create(
                model="no-such-model",
                max_tokens=16,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
        assert missing.value.body == {
            "type": "error",
            "error": {
                "type": "not_found_error",
                "message": "the model 'no-such-model' does not exist: no connected agent serves it",
            },
        }
    async with client(server, key="wrong") as c:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await c.messages.create(
                model="fixture-model",
                max_tokens=16,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
        body = denied.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
    async with httpx.AsyncClient(timeout=30) as http:
        bad = await http.post(
            f"{server.url}/api/llm/v1/messages",
            content=b"{not json",
            headers={"x-api-key": server.api_key, "content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert bad.json()["type"] == "error"
        assert bad.json()["error"]["type"] == "invalid_request_error"
        # The OpenAI routes keep the OpenAI shape.
        openai_style = await http.post(
            f"{server.api_base}/chat/completions",
            content=b"{not json",
            headers={"x-api-key": server.api_key, "content-type": "application/json"},
        )
        assert openai_style.status_code == 400
        assert openai_style.json()["error"]["code"] == "invalid_json"


async def test_backend_errors_on_messages_pass_through(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with client(server) as c:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await c.messages.create(
                model="fixture-model",
                max_tokens=16,
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_body={"fixture": {"status": 429}},
            )
        body = limited.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"


async def test_targeted_messages_route(
    server: Server, backend: FixtureBackend, agent: NfrxProcess
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        unknown = await http.post(
            f"{server.url}/api/llm/id/nobody/v1/messages",
            json={"model": "fixture-model", "max_tokens": 4, "messages": MESSAGES},
            headers={"x-api-key": server.api_key},
        )
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "error"
    assert "nobody" in unknown.json()["error"]["message"]
