"""The ``mcp`` SDK's own client against the relay: every feature a provider has, in both eras.

    mcp.client.Client -> nfrx serve /api/mcp/id/fixture <- tunnel -> nfrx mcp -> fixture provider

for the fixture provider over Streamable HTTP and over stdio. Legacy (``mode="legacy"``, an
``initialize`` handshake at 2025-11-25) covers tools, resources, prompts, progress, logging and
the sampling and elicitation round trips (server-to-client requests on the POST's SSE stream,
answered by new POSTs); modern (``mode="2026-07-28"``) covers the same features the 2026 wire
keeps, with sampling and elicitation as multi round-trip requests (``input_required``).

Auth: the server's API_KEY works, and so does the agent's own AUTH_TOKEN (only its SHA-256 reaches
the server); a wrong or missing bearer is 401 with a JSON-RPC body and ``WWW-Authenticate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.context import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    LoggingMessageNotificationParams,
    TextContent,
    TextResourceContents,
)

from tests.fixtures.mcp_stack import Provider, Relay, run_relay

pytestmark = [
    pytest.mark.e2e,
    # Sampling, elicitation-by-request and logging are deprecated as of 2026-07-28; the SDK says
    # so on every legacy use, which is exactly what these tests exercise.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

RELAY_TOKEN = "relay-token-for-tests"
LEGACY = "legacy"
MODERN = "2026-07-28"


@pytest.fixture(params=["http", "stdio"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relay]:
    provider: Provider = request.param
    async with run_relay(provider, tmp_path, agent_env_extra={"AUTH_TOKEN": RELAY_TOKEN}) as r:
        yield r


@asynccontextmanager
async def connect(
    relay: Relay, mode: str, *, token: str | None = None, **options: Any
) -> AsyncIterator[Client]:
    bearer = token if token is not None else relay.server.api_key
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {bearer}"}, timeout=60)
    async with http:
        transport = streamable_http_client(relay.url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=60, **options) as client:
            yield client


def _text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
async def test_tools_resources_and_prompts(relay: Relay, mode: str) -> None:
    async with connect(relay, mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "slow", "test_simple_text", "test_sampling"} <= tools
        assert _text(await client.call_tool("echo", {"text": "héllo"})) == "héllo"
        failed = await client.call_tool("test_error_handling", {})
        assert failed.is_error

        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "test://static-text" in resources
        read = await client.read_resource("test://template/42/data")
        contents = read.contents[0]
        assert isinstance(contents, TextResourceContents)
        assert '"id": "42"' in contents.text

        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "test_prompt_with_arguments" in prompts
        prompt = await client.get_prompt(
            "test_prompt_with_arguments", {"arg1": "hello", "arg2": "world"}
        )
        content = prompt.messages[0].content
        assert isinstance(content, TextContent)
        assert content.text == "Prompt with arguments: arg1='hello', arg2='world'"


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
async def test_progress_reaches_the_client(relay: Relay, mode: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with connect(relay, mode) as client:
        result = await client.call_tool(
            "slow", {"tag": "progress", "seconds": 0.6}, progress_callback=on_progress
        )
    assert _text(result) == "slow progress done"
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert relay.event_lines() == ["start progress", "done progress"]


async def test_logging_legacy(relay: Relay) -> None:
    logs: list[Any] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with connect(relay, LEGACY, logging_callback=on_log) as client:
        await client.set_logging_level("debug")
        result = await client.call_tool("test_tool_with_logging", {})
    assert _text(result) == "Tool with logging executed successfully"
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]


async def test_logging_modern(relay: Relay) -> None:
    logs: list[Any] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with connect(relay, MODERN, logging_callback=on_log, log_level="info") as client:
        await client.call_tool("test_tool_with_logging", {})
    assert logs == ["Tool execution started", "Tool processing data", "Tool execution completed"]


async def _sample(context: ClientRequestContext, params: CreateMessageRequestParams) -> Any:
    asked = params.messages[0].content
    question = asked.text if isinstance(asked, TextContent) else "?"
    return CreateMessageResult(
        role="assistant",
        content=TextContent(type="text", text=f"answer to {question}"),
        model="fixture-llm",
        stop_reason="endTurn",
    )


async def _elicit(context: ClientRequestContext, params: ElicitRequestParams) -> Any:
    content: dict[str, str | int | float | bool | list[str] | None] = {
        "username": "ada",
        "email": "ada@example.org",
        "name": "Ada",
    }
    return ElicitResult(action="accept", content=content)


async def test_sampling_round_trip_legacy(relay: Relay) -> None:
    async with connect(relay, LEGACY, sampling_callback=_sample) as client:
        result = await client.call_tool("test_sampling", {"prompt": "capital of France?"})
    assert _text(result) == "LLM response: answer to capital of France?"


async def test_elicitation_round_trip_legacy(relay: Relay) -> None:
    async with connect(relay, LEGACY, elicitation_callback=_elicit) as client:
        result = await client.call_tool("test_elicitation", {"message": "who are you?"})
    assert _text(result).startswith("User response: action=accept")
    assert '"username": "ada"' in _text(result)


async def test_sampling_and_elicitation_modern(relay: Relay) -> None:
    """2026-07-28 has no server-to-client requests: the provider answers ``input_required``
    and the client retries with ``inputResponses`` (a new request each round)."""
    async with connect(
        relay, MODERN, sampling_callback=_sample, elicitation_callback=_elicit
    ) as client:
        sampled = await client.call_tool("test_input_required_result_sampling", {})
        elicited = await client.call_tool("test_input_required_result_elicitation", {})
    assert _text(sampled) == "Sampling response: answer to What is the capital of France?"
    assert _text(elicited) == "Hello, Ada!"


async def test_the_agents_auth_token_is_accepted(relay: Relay) -> None:
    async with connect(relay, LEGACY, token=RELAY_TOKEN) as client:
        assert _text(await client.call_tool("echo", {"text": "via token"})) == "via token"
    async with connect(relay, MODERN, token=RELAY_TOKEN) as client:
        assert _text(await client.call_tool("echo", {"text": "modern"})) == "modern"


@pytest.mark.parametrize("bearer", ["wrong-token", None])
async def test_a_wrong_or_missing_bearer_is_401(relay: Relay, bearer: str | None) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(relay.url, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="nfrx"'
    error = response.json()
    assert error["jsonrpc"] == "2.0"
    assert error["id"] is None  # refused before the body is read
    assert error["error"]["code"] == -32603
    assert error["error"]["data"]["nfrx"]["code"] == "MCP_UNAUTHORIZED"
    assert relay.event_lines() == []
