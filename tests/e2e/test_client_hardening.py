"""Clients at the edges of HTTP (issue 13, finding 5): a WebSocket upgrade on a plain route, a
request body that stalls (BODY_TIMEOUT), and the start-up warning for X-User-Roles trust."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.e2e.harness import Server, run_server
from tests.e2e.test_auth import read_response, rejected_upgrade, wait_closed
from tests.e2e.test_bad_agent_response import raw_agent, working

pytestmark = pytest.mark.e2e

HANG_GUARD = 30.0


async def test_a_websocket_upgrade_on_an_http_route_is_refused_cleanly(server: Server) -> None:
    cases = {
        "/healthz": (400, "websocket_mismatch"),
        "/api/llm/v1/models": (400, "websocket_mismatch"),
        "/api/state": (400, "websocket_mismatch"),
        "/api/llm/v1/chat/completions": (405, "method_not_allowed"),
        "/no/such/route": (404, "not_found"),
    }
    for path, (status, code) in cases.items():
        url = re.sub(r"^http", "ws", server.url) + path
        with trio.fail_after(HANG_GUARD):
            got, body = await rejected_upgrade(url, [])
        assert got == status, path
        assert body["error"]["code"] == code, path
    # The reverse: a plain request on the agents' WebSocket route.
    (head, body), stream = await request(
        server, b"GET /api/llm/connect HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert json.loads(body)["error"]["code"] == "websocket_mismatch"
    output = server.proc.output()
    assert "Traceback" not in output
    assert " ERROR " not in output


async def request(server: Server, data: bytes) -> tuple[tuple[bytes, bytes], trio.SocketStream]:
    port = int(server.url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    with trio.fail_after(HANG_GUARD):
        response = await read_response(stream)
    assert response is not None
    return response, stream


def stalled_post(path: str, content_type: str, part: bytes, *, key: str = "ak") -> bytes:
    """A POST whose Content-Length promises 100,000 bytes, of which only ``part`` is sent."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {content_type}\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Length: 100000\r\n\r\n"
    ).encode() + part


@asynccontextmanager
async def quick_body_timeout() -> AsyncIterator[Server]:
    async with run_server(env={"BODY_TIMEOUT": "1"}) as server:
        yield server


async def assert_408_then_closed(server: Server, data: bytes, *, style: str = "openai") -> None:
    (head, body), stream = await request(server, data)
    async with stream:
        assert head.startswith(b"HTTP/1.1 408 "), head
        assert b"\r\nconnection: close" in head.lower()
        document = json.loads(body)
        if style == "jsonrpc":
            assert document["error"]["data"]["nfrx"]["code"] == "MCP_INVALID_MESSAGE"
            assert "nothing arrived for 1 s" in document["error"]["message"]
        elif style == "anthropic":
            assert document == {
                "type": "error",
                "error": {
                    "type": "api_error",
                    "message": "the request body stalled: nothing arrived for 1 s",
                },
            }
        else:
            assert document["error"] == {
                "message": "the request body stalled: nothing arrived for 1 s",
                "type": "invalid_request_error",
                "code": "body_timeout",
            }
        with trio.fail_after(HANG_GUARD):
            await wait_closed(stream)


async def test_a_stalled_json_body_is_408() -> None:
    async with quick_body_timeout() as server:
        for path, style in (
            ("/api/llm/v1/chat/completions", "openai"),
            ("/api/llm/v1/messages", "anthropic"),
        ):
            await assert_408_then_closed(
                server,
                stalled_post(path, "application/json", b'{"model": "fixture-mo'),
                style=style,
            )
        assert server.proc.process.returncode is None


async def test_a_stalled_upload_is_408_also_while_it_streams_to_an_agent() -> None:
    boundary = "XyZ"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n'
    ).encode() + b"%PDF-1.4 partial"
    content_type = f"multipart/form-data; boundary={boundary}"
    async with quick_body_timeout() as server:
        # ASR reads the body up to its model field (after the file here) to pick an agent ...
        await assert_408_then_closed(
            server, stalled_post("/api/asr/v1/audio/transcriptions", content_type, part)
        )
        # ... docling streams it to the agent at once: the stall comes mid-relay.
        async with raw_agent(
            server, working(200), kind="docling", agent_id="docling-1", models=("docling",)
        ) as agent:
            await assert_408_then_closed(
                server, stalled_post("/api/docling/v1/convert/file", content_type, part)
            )
            await agent.wait_reset(1)  # the agent was told to stop


async def test_a_stalled_mcp_message_is_408() -> None:
    async with (
        quick_body_timeout() as server,
        raw_agent(
            server,
            working(200),
            kind="mcp",
            agent_id="relay-1",
            models=(),
            options=(("transport", "http"),),
        ),
    ):
        await assert_408_then_closed(
            server,
            stalled_post("/api/mcp/id/relay-1", "application/json", b'{"jsonrpc": "2.0", '),
            style="jsonrpc",
        )


@pytest.mark.parametrize(
    ("env", "settings"),
    [
        ({"API_HTTP_ROLES": "admin"}, ["API_HTTP_ROLES"]),
        ({"CLIENT_HTTP_ROLES": "agents"}, ["CLIENT_HTTP_ROLES"]),
        (
            {"API_HTTP_ROLES": "admin", "CLIENT_HTTP_ROLES": "agents"},
            ["API_HTTP_ROLES", "CLIENT_HTTP_ROLES"],
        ),
        ({}, []),
    ],
)
async def test_trusting_x_user_roles_is_a_start_up_warning(
    env: dict[str, str], settings: list[str]
) -> None:
    async with run_server(env=env) as server:
        output = server.proc.output()
    warned = re.findall(r"WARNING .*: (\w+_HTTP_ROLES) is set: .*X-User-Roles", output)
    assert warned == settings
