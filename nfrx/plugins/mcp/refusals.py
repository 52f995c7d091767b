"""What the MCP relay refuses before dispatch, and how: pure, no request context.

A refusal is an :class:`McpRefusal`: an HTTP status whose body is a JSON-RPC error with
``data.nfrx.code`` (reference ``mcp.md`` section 11, item 5), raised by the routes
(:mod:`.server`) and answered by the app's error handler. The constructors below are the relay's
whole vocabulary of pre-dispatch refusals (the order in which the routes check them is in
:mod:`.server`'s docstring); the predicates decide the checks that need no relay state: ``Host``,
``Origin``, ``Content-Type`` and a relay's own token.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from typing import TYPE_CHECKING

from nfrx.plugins.mcp import wire
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import Sequence


class McpRefusal(HttpError):
    """A relay refusal: an HTTP status whose body, in the ``jsonrpc`` error style of the MCP
    routes, is a JSON-RPC error naming it (``data.nfrx.code``)."""

    def __init__(
        self,
        status: int,
        nfrx_code: str,
        message: str,
        *,
        request_id: str | None = None,
        retryable: bool = False,
        headers: dict[str, str] | None = None,
        code: int = wire.INTERNAL_ERROR,
    ) -> None:
        super().__init__(
            status,
            nfrx_code,
            message,
            headers=headers,
            rpc_id=request_id,
            rpc_code=code,
            retryable=retryable,
        )


# -- the refusals -------------------------------------------------------------------------------


def draining() -> McpRefusal:
    return _retry_soon(
        wire.RelayCode.DRAINING, "the server is shutting down and accepts no new requests"
    )


def unauthorized() -> McpRefusal:
    return McpRefusal(
        401,
        wire.RelayCode.UNAUTHORIZED,
        "missing or invalid key: send 'Authorization: Bearer <API_KEY or the relay's AUTH_TOKEN>'",
        headers={"WWW-Authenticate": 'Bearer realm="nfrx"'},
    )


def unavailable(message: str) -> McpRefusal:
    """503 ``MCP_PROVIDER_UNAVAILABLE``, worth retrying in a few seconds."""
    return _retry_soon(wire.RelayCode.PROVIDER_UNAVAILABLE, message)


def _retry_soon(nfrx_code: str, message: str) -> McpRefusal:
    return McpRefusal(503, nfrx_code, message, retryable=True, headers={"Retry-After": "5"})


def not_json() -> McpRefusal:
    return McpRefusal(
        415,
        wire.RelayCode.INVALID_MESSAGE,
        "an MCP message must be sent as Content-Type: application/json",
        code=wire.INVALID_REQUEST,
    )


def too_large(limit: int) -> McpRefusal:
    return McpRefusal(
        413,
        wire.RelayCode.LIMIT_EXCEEDED,
        f"the message exceeds the limit of {limit} bytes (BROKER_MAX_REQ_BYTES)",
        code=wire.INVALID_REQUEST,
    )


def body_stalled(message: str) -> McpRefusal:
    """408: no body chunk for ``BODY_TIMEOUT`` (worth retrying)."""
    return McpRefusal(408, wire.RelayCode.INVALID_MESSAGE, message, retryable=True)


def invalid_message(problem: wire.InvalidMessage) -> McpRefusal:
    """400: the body is not one JSON-RPC message (``-32700`` when it is not JSON at all)."""
    return McpRefusal(400, wire.RelayCode.INVALID_MESSAGE, str(problem), code=problem.code)


def session_not_found(request_id: str | None) -> McpRefusal:
    return McpRefusal(
        404,
        wire.RelayCode.SESSION_NOT_FOUND,
        "session not found: it ended or never existed here; initialize a new one",
        request_id=request_id,
    )


def too_many(what: str, request_id: str | None, cap: int) -> McpRefusal:
    """429 for the per-relay request cap or (``what="streams"``) the stream cap."""
    if what == "streams":
        text = (
            f"the relay has {cap} long-lived streams open, its limit (MCP_MAX_STREAMS_PER_CLIENT)"
        )
    else:
        text = f"the relay has {cap} requests in flight, its limit; retry shortly"
    return McpRefusal(
        429,
        wire.RelayCode.LIMIT_EXCEEDED,
        text,
        request_id=request_id,
        retryable=True,
        headers={"Retry-After": "1"},
    )


def sessions_full(count: int, request_id: str | None) -> McpRefusal:
    return McpRefusal(
        503,
        wire.RelayCode.LIMIT_EXCEEDED,
        f"the relay holds {count} sessions, its limit "
        "(MCP_MAX_SESSIONS_PER_CLIENT); end one (DELETE) or retry later",
        request_id=request_id,
        retryable=True,
        headers={"Retry-After": "5"},
    )


# -- the checks that need no relay state --------------------------------------------------------


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """``host`` (with or without its port) is one of ``allowed``, case-insensitively."""
    host = host.strip().lower()
    bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return any(entry.lower() in (host, bare) for entry in allowed)


def same_origin(origin: str, host: str) -> bool:
    """``origin`` names this very server (the ``Host`` the request came to)."""
    parts = urllib.parse.urlsplit(origin)
    return bool(parts.scheme) and parts.netloc.lower() == host.strip().lower()


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def token_matches(bearer: str | None, digest: str) -> bool:
    """``bearer`` is the relay's own ``AUTH_TOKEN`` (the agent announced its SHA-256 digest)."""
    if not bearer or not digest:
        return False
    presented = hashlib.sha256(bearer.encode()).hexdigest()
    return hmac.compare_digest(presented, digest.strip().lower())
