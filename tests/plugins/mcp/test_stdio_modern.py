"""The stdio bridge's modern-era HTTP validation (it plays the Streamable HTTP server for a stdio
provider), through an in-memory tunnel against the conformance fixture provider over stdio
(``tests/fixtures/mcp_provider.py --stdio``, the ``mcp`` SDK's server, which has the
``x-mcp-header``-annotated ``test_region`` tool). The pure ladder itself is tested in
``test_modern_validation.py``.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nfrx.config.model import McpAgentConfig
from nfrx.plugins.mcp import modern_validation, wire
from nfrx.plugins.mcp.stdio import StdioBridge
from nfrx.transport.session import TunnelSession
from tests.plugins.mcp.test_stdio import ROOT, Answer, read_all, serving

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


@asynccontextmanager
async def relay() -> AsyncIterator[TunnelSession]:
    config = McpAgentConfig(
        mcp_stdio_command=sys.executable,
        mcp_stdio_args=("-m", "tests.fixtures.mcp_provider", "--stdio"),
        mcp_stdio_env=(f"PYTHONPATH={ROOT}",),
        mcp_stdio_workdir=str(ROOT),
    )
    bridge = StdioBridge(config)
    async with serving(bridge) as server:
        assert bridge.pool.modern_versions == (MODERN,)
        yield server


def request(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {"_meta": dict(META), **(params or {})},
    }


def region_call(request_id: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    return request(request_id, "tools/call", {"name": "test_region", "arguments": arguments})


def routing(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The headers a conforming modern client sends for ``body``."""
    headers = [("mcp-protocol-version", MODERN), ("mcp-method", body["method"])]
    key = modern_validation.NAME_BEARING_METHODS.get(body["method"])
    if key and key in body.get("params", {}):
        headers.append(("mcp-name", body["params"][key]))
    return headers


async def post(
    server: TunnelSession, body: dict[str, Any], headers: list[tuple[str, str]]
) -> Answer:
    """POST ``body`` with exactly ``headers`` (plus the server's modern-era annotations)."""
    kind = wire.Kind.REQUEST if "id" in body else wire.Kind.NOTIFICATION
    all_headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        (wire.Meta.ERA, wire.MODERN),
        (wire.Meta.KIND, kind),
        (wire.Meta.METHOD, body["method"]),
        *headers,
    ]
    stream = server.open_stream("POST", "/", tuple(all_headers), timeout=600)
    await stream.send_data(json.dumps(body).encode(), end=True)
    return await read_all(stream)


def assert_error(answer: Answer, status: int, request_id: Any, code: int, message: str) -> Any:
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    body = json.loads(answer.body)
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == request_id
    assert body["error"]["code"] == code
    assert body["error"]["message"] == message
    return body["error"].get("data")


def tool_text(answer: Answer) -> str:
    assert answer.status == 200, answer.body
    result = answer.json["result"]
    assert "isError" not in result or result["isError"] is False, result
    text = result["content"][0]["text"]
    assert isinstance(text, str)
    return text


# -- the envelope ladder -------------------------------------------------------------------------


async def test_header_and_envelope_checks() -> None:
    async with relay() as server:
        # The version header differs from the body's (even an unsupported body version): -32020.
        body = request(302, "server/discover")
        body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "v999.0.0"
        answer = await post(server, body, routing(request(302, "server/discover")))
        assert_error(
            answer,
            400,
            302,
            modern_validation.HEADER_MISMATCH,
            "mcp-protocol-version header does not match the request envelope's protocol version",
        )

        # Both name an unsupported version: -32022 naming the provider's versions.
        headers = [("mcp-protocol-version", "v999.0.0"), ("mcp-method", "server/discover")]
        data = assert_error(
            await post(server, body, headers),
            400,
            302,
            modern_validation.UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
        )
        assert data == {"supported": [MODERN], "requested": "v999.0.0"}

        # Mcp-Method missing, different, or differing in case: -32020.
        body = request("a", "tools/list")
        for method_headers in (
            [],
            [("mcp-method", "prompts/list")],
            [("mcp-method", "TOOLS/LIST")],
        ):
            answer = await post(server, body, [("mcp-protocol-version", MODERN), *method_headers])
            assert_error(
                answer,
                400,
                "a",
                modern_validation.HEADER_MISMATCH,
                "mcp-method header does not match the request body's method",
            )

        # A routing header sent twice: -32020, before anything else.
        answer = await post(server, body, [*routing(body), ("mcp-method", "tools/list")])
        assert_error(
            answer,
            400,
            "a",
            modern_validation.HEADER_MISMATCH,
            "mcp-method header appears more than once",
        )

        # Mcp-Name missing or different: -32020; its base64 form matches.
        call = region_call(7, {"region": "eu"})
        name_message = "mcp-name header does not match the request body's 'name' parameter"
        no_name = [h for h in routing(call) if h[0] != "mcp-name"]
        for name_headers in ([], [("mcp-name", "wrong_tool_name")]):
            answer = await post(server, call, [*no_name, *name_headers, ("mcp-param-region", "eu")])
            assert_error(answer, 400, 7, modern_validation.HEADER_MISMATCH, name_message)
        encoded = "=?base64?" + base64.b64encode(b"test_region").decode() + "?="
        answer = await post(
            server, call, [*no_name, ("mcp-name", encoded), ("mcp-param-region", "eu")]
        )
        assert tool_text(answer) == "region=eu query="

        # _meta missing, or without a required key: -32602.
        bare = {"jsonrpc": "2.0", "id": 9, "method": "server/discover", "params": {}}
        assert_error(
            await post(server, bare, routing(bare)),
            400,
            9,
            modern_validation.INVALID_PARAMS,
            "params._meta must be an object carrying the required "
            "'io.modelcontextprotocol/protocolVersion' and "
            "'io.modelcontextprotocol/clientCapabilities' envelope keys",
        )
        partial = request(10, "server/discover")
        del partial["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
        assert_error(
            await post(server, partial, routing(partial)),
            400,
            10,
            modern_validation.INVALID_PARAMS,
            "params._meta is missing the required envelope key(s): "
            "io.modelcontextprotocol/clientCapabilities",
        )


async def test_removed_methods_are_not_found() -> None:
    async with relay() as server:
        for method in sorted(modern_validation.REMOVED_METHODS):
            body = request(500, method)
            data = assert_error(
                await post(server, body, routing(body)),
                404,
                500,
                modern_validation.METHOD_NOT_FOUND,
                "Method not found",
            )
            assert data == method
        # A removed method is still checked against its headers first.
        body = request(501, "initialize")
        answer = await post(server, body, [("mcp-protocol-version", MODERN)])
        assert_error(
            answer,
            400,
            501,
            modern_validation.HEADER_MISMATCH,
            "mcp-method header does not match the request body's method",
        )


async def test_notifications_are_checked_for_the_version_only() -> None:
    async with relay() as server:
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        answer = await post(server, note, [("mcp-protocol-version", "v999.0.0")])
        data = assert_error(
            answer,
            400,
            None,
            modern_validation.UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
        )
        assert data == {"supported": [MODERN], "requested": "v999.0.0"}
        answer = await post(server, note, [("mcp-protocol-version", MODERN)])
        assert (answer.status, answer.body) == (202, b"")


# -- Mcp-Param-* ---------------------------------------------------------------------------------


async def test_mcp_param_headers_are_checked_against_the_tool_schema() -> None:
    async with relay() as server:
        call = region_call(200, {"region": "Hello"})
        head = routing(call)

        def encoded(text: bytes) -> str:
            return "=?base64?" + base64.b64encode(text).decode() + "?="

        for value in ("Hello", encoded(b"Hello")):
            answer = await post(server, call, [*head, ("mcp-param-region", value)])
            assert tool_text(answer) == "region=Hello query="
        # Not a sentinel (no suffix): a literal, compared as such.
        literal = "=?base64?" + base64.b64encode(b"Hello").decode()
        answer = await post(
            server, region_call(201, {"region": literal}), [*head, ("mcp-param-region", literal)]
        )
        assert tool_text(answer) == f"region={literal} query="

        cases = [
            (
                [],
                "Mcp-Param-Region header is missing but the request body's 'region' argument "
                "is present",
            ),
            (
                [("mcp-param-region", "Other")],
                "Mcp-Param-Region header does not match the request body's 'region' argument",
            ),
            (
                [("mcp-param-region", "=?base64?SGVsbG8?=")],
                "Mcp-Param-Region header carries a malformed base64 sentinel value",
            ),
            (
                [("mcp-param-region", "=?base64?SGVs!!!bG8=?=")],
                "Mcp-Param-Region header carries a malformed base64 sentinel value",
            ),
            (
                [("mcp-param-region", "Hello"), ("mcp-param-region", "Hello")],
                "Mcp-Param-Region header appears more than once",
            ),
        ]
        for extra, message in cases:
            answer = await post(server, call, [*head, *extra])
            assert_error(answer, 400, 200, modern_validation.HEADER_MISMATCH, message)

        # A header for an argument the body does not carry.
        absent = region_call(202, {"query": "q"})
        answer = await post(server, absent, [*routing(absent), ("mcp-param-region", "eu")])
        assert_error(
            answer,
            400,
            202,
            modern_validation.HEADER_MISMATCH,
            "Mcp-Param-Region header is present but the request body's 'region' argument is absent",
        )
        # Tools without annotations, and unknown tools, are not refused by the bridge.
        echo = request(203, "tools/call", {"name": "test_simple_text", "arguments": {}})
        assert (await post(server, echo, [*routing(echo), ("mcp-param-x", "y")])).status == 200
        unknown = request(204, "tools/call", {"name": "no_such_tool", "arguments": {"a": 1}})
        answer = await post(server, unknown, routing(unknown))
        assert answer.json["id"] == 204
        assert answer.json.get("error") or answer.json["result"].get("isError")


async def test_valid_modern_traffic_passes_unchanged() -> None:
    async with relay() as server:
        body = region_call("x-1", {"region": "eu", "query": "q"})
        answer = await post(server, body, [*routing(body), ("mcp-param-region", "eu")])
        assert answer.json["id"] == "x-1"
        assert tool_text(answer) == "region=eu query=q"
