"""The MCP relay's refusals (:mod:`nfrx.plugins.mcp.refusals`): errors in the ``jsonrpc`` style."""

from __future__ import annotations

import json

from nfrx.plugins.mcp import refusals, wire


def test_an_mcp_refusal_is_an_error_in_the_jsonrpc_style() -> None:
    refusal = refusals.session_not_found("12")
    assert json.loads(refusal.json_bytes("jsonrpc"))["id"] == 12
    assert json.loads(refusal.json_bytes("jsonrpc"))["error"]["data"]["nfrx"]["code"] == (
        "MCP_SESSION_NOT_FOUND"
    )
    invalid = refusals.invalid_message(wire.InvalidMessage("the body is not JSON: x", code=-32700))
    assert json.loads(invalid.json_bytes("jsonrpc"))["error"]["code"] == -32700
    # The code comes with the problem, never from its words.
    worded = refusals.invalid_message(wire.InvalidMessage("the body is not JSON, oddly"))
    assert json.loads(worded.json_bytes("jsonrpc"))["error"]["code"] == -32600
