"""HTTP header rules shared by the server and the agents (a leaf: it imports nothing of ours)."""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers about one connection, not the message: dropped at every hop (RFC 9110 7.6.1)."""
