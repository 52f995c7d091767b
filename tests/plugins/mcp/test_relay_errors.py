"""What an MCP client is told when the tunnel stream under its request fails: the reset code,
never the relay's own words (which name the provider's private URL)."""

from __future__ import annotations

import json

import pytest

from nfrx.plugins.mcp.relay import tunnel_error
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed

LEAKY = "cannot reach the MCP provider at http://user:pw@10.0.0.5:9000/mcp?token=t: refused"


@pytest.mark.parametrize(
    ("failure", "code", "shown"),
    [
        (TunnelClosed(LEAKY), "MCP_PROVIDER_UNAVAILABLE", "nfrx: the relay disconnected"),
        (
            StreamReset(ResetCode.TIMEOUT, LEAKY, by_peer=True),
            "MCP_TIMEOUT",
            "nfrx: the relay gave up waiting for the provider",
        ),
        (
            StreamReset(ResetCode.UPSTREAM_UNREACHABLE, LEAKY, by_peer=True),
            "MCP_PROVIDER_UNAVAILABLE",
            "nfrx: the provider is not available (upstream_unreachable)",
        ),
        (
            StreamReset(ResetCode.UPSTREAM_ERROR, LEAKY, by_peer=True),
            "MCP_UPSTREAM_ERROR",
            "nfrx: the provider failed (upstream_error)",
        ),
        (
            StreamReset(ResetCode.BAD_AGENT_RESPONSE, "status 101", by_peer=False),
            "MCP_UPSTREAM_ERROR",
            "nfrx: the provider failed (bad_agent_response)",
        ),
        (
            StreamReset("made\nup: http://x:y@h", LEAKY, by_peer=True),
            "MCP_UPSTREAM_ERROR",
            "nfrx: the provider failed (agent_error)",
        ),
    ],
)
def test_the_client_gets_the_code_only(
    failure: StreamReset | TunnelClosed, code: str, shown: str
) -> None:
    body = json.loads(tunnel_error(3, failure, "rid-1"))
    assert body["id"] == 3
    assert body["error"]["message"] == shown
    assert body["error"]["data"]["nfrx"]["code"] == code
    assert body["error"]["data"]["nfrx"]["req_id"] == "rid-1"
    assert "10.0.0.5" not in json.dumps(body)
