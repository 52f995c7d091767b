"""What a client is told when the tunnel stream under its request fails (finding 4: the agent's
words, which name private backend URLs, never reach it; the operator's log gets them redacted);
and the one set of error styles an answer takes."""

from __future__ import annotations

import typing

import pytest

from nfrx import jsonrpc
from nfrx.protocol import ResetCode
from nfrx.server import openapi
from nfrx.server.http_errors import ErrorStyle, HttpError, from_tunnel_error
from nfrx.transport.errors import StreamReset, TunnelClosed

LEAKY = "cannot reach the backend at http://user:pw@10.0.0.5:8000/v1?key=k: refused"


@pytest.mark.parametrize(
    ("code", "status", "client_code", "message"),
    [
        (
            ResetCode.UPSTREAM_UNREACHABLE,
            502,
            "upstream_unreachable",
            "the agent could not reach its backend",
        ),
        (ResetCode.UPSTREAM_ERROR, 502, "upstream_error", "the agent's backend failed"),
        (ResetCode.TIMEOUT, 504, "timeout", "the agent's deadline for this request passed"),
        (
            ResetCode.DRAINING,
            503,
            "agent_draining",
            "the agent is draining and takes no new requests",
        ),
        (
            ResetCode.BAD_AGENT_RESPONSE,
            502,
            "bad_agent_response",
            "the agent sent an invalid response",
        ),
        (ResetCode.INTERNAL, 502, "internal_error", "the agent failed"),
        ("made-up\ncode", 502, "agent_error", "the agent reset the request"),
    ],
)
def test_a_reset_is_told_by_its_code(
    code: str, status: int, client_code: str, message: str
) -> None:
    error = from_tunnel_error(StreamReset(code, LEAKY, by_peer=True), "rid-7")
    assert error.status == status
    assert error.code == client_code
    assert error.message == f"{message} (request id rid-7)"
    assert "10.0.0.5" not in str(error.body())
    assert error.detail.endswith(
        "cannot reach the backend at http://***@10.0.0.5:8000/v1?key=***: refused"
    )


def test_a_lost_tunnel_is_told_without_its_reason() -> None:
    error = from_tunnel_error(TunnelClosed(f"connection closed by peer ({LEAKY})"), "rid-8")
    assert (error.status, error.code) == (502, "agent_disconnected")
    assert error.message == "the agent serving this request disconnected (request id rid-8)"
    assert "pw" not in error.detail
    assert "http://***@10.0.0.5:8000/v1" in error.detail


# -- error styles -------------------------------------------------------------------------------


def test_one_error_style_per_shape_the_document_describes() -> None:
    """One ``ErrorStyle``: every style an error can be answered in has its body schema in the
    OpenAPI document, and nothing else does."""
    assert set(typing.get_args(ErrorStyle)) == set(openapi._STYLE_NAMES)
    for _, schema in openapi._STYLE_NAMES.values():
        assert schema in openapi.SCHEMAS


def test_every_style_of_one_error() -> None:
    error = HttpError(429, "busy", "slow down", retryable=True, rpc_id='"7"')
    assert error.body("openai") == {
        "error": {"message": "slow down", "type": "overloaded_error", "code": "busy"}
    }
    assert error.body("anthropic") == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }
    assert error.body("plain") == {"error": "busy", "message": "slow down"}
    assert error.body("jsonrpc") == {
        "jsonrpc": "2.0",
        "id": "7",
        "error": {
            "code": -32603,
            "message": "nfrx: slow down",
            "data": {"nfrx": {"code": "busy", "retryable": True}},
        },
    }
    # The JSON-RPC body is the relay's own (the id spliced as the client sent it).
    assert error.json_bytes("jsonrpc") == jsonrpc.nfrx_error(
        '"7"', "busy", "slow down", retryable=True
    )
