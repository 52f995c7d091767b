"""CORS for browser clients, as ASGI middleware in front of the whole app (``ALLOWED_ORIGINS``).

A request whose ``Origin`` is allowed gets ``Access-Control-Allow-Origin`` (its origin, with
``Vary: Origin``) and the exposed headers on every answer, errors included, so that a browser app
can read a 401 or a 429. Any other request gets no CORS header at all. A preflight (``OPTIONS``
with ``Origin`` and ``Access-Control-Request-Method``) is answered here, before any route or key
check: 204 with the allowed methods and headers for an allowed origin, 403 JSON otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    Asgi = Callable[[Any, Any, Any], Awaitable[None]]

ALLOW_METHODS = "GET, POST, OPTIONS, DELETE"
ALLOW_HEADERS = (
    "Authorization, Content-Type, X-Api-Key, X-Request-Id, anthropic-version, anthropic-beta, "
    "Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name"
)
EXPOSE_HEADERS = "X-Request-Id, Mcp-Session-Id, Mcp-Protocol-Version, WWW-Authenticate"
MAX_AGE_SECONDS = 600


class OriginPolicy:
    """Which origins ``ALLOWED_ORIGINS`` allows (``*``: any)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.any = "*" in allowed
        self.origins = frozenset(o.lower() for o in allowed if o != "*")

    def allows(self, origin: str) -> bool:
        return bool(origin) and (self.any or origin.lower() in self.origins)


def cors(app: Asgi, allowed: Sequence[str]) -> Asgi:
    """``app`` with CORS handling for HTTP requests (WebSockets pass through untouched)."""
    policy = OriginPolicy(allowed)

    nobody = not policy.any and not policy.origins

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (nobody and scope["method"] != "OPTIONS"):
            # With no origin allowed, only a preflight needs an answer from here (a 403).
            await app(scope, receive, send)
            return
        headers = _headers(scope)
        origin = headers.get(b"origin", b"").decode("latin-1")
        if scope["method"] == "OPTIONS" and origin and b"access-control-request-method" in headers:
            await _preflight(send, origin, policy.allows(origin))
            return
        if not policy.allows(origin):
            await app(scope, receive, send)
            return
        extra = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await app(scope, receive, send_with_cors)

    return middleware


async def _preflight(send: Any, origin: str, allowed: bool) -> None:
    if allowed:
        status = 204
        body = b""
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
            (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
            (b"vary", b"Origin"),
        ]
    else:
        error = HttpError(
            403, "origin_not_allowed", f"cross-origin requests from {origin} are not allowed"
        )
        status = 403
        body = error.json_bytes("openai")
        headers = [(b"content-type", b"application/json"), (b"vary", b"Origin")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Any) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", ())}
