"""What the MCP relay's server and agent sides agree on: eras, header allow-lists, the server's
annotations, reading just enough of a JSON-RPC message, relay errors (:mod:`nfrx.jsonrpc`) and SSE
framing.

Bodies are never re-encoded: :func:`parse_message` only *reads* the fields routing needs, and ids
are carried as their exact JSON text (``1`` and ``"1"`` are different requests).
"""

from __future__ import annotations

import json
from typing import Any, Final

import attrs

from nfrx import jsonrpc

# JSON-RPC errors are written in one place, for the server's error style and both relay sides.
INTERNAL_ERROR: Final = jsonrpc.INTERNAL_ERROR
INVALID_REQUEST: Final = jsonrpc.INVALID_REQUEST
PARSE_ERROR: Final = jsonrpc.PARSE_ERROR
jsonrpc_error = jsonrpc.error
relay_error = jsonrpc.nfrx_error

LEGACY: Final = "legacy"
MODERN: Final = "modern"
MODERN_VERSION: Final = "2026-07-28"
"""The first protocol revision without sessions, ``initialize`` or server-to-client requests."""
DEFAULT_VERSION: Final = "2025-03-26"
"""What a missing ``MCP-Protocol-Version`` header means (the spec's rule)."""


def era_of(protocol_version: str | None) -> str:
    """:data:`MODERN` for ``MCP-Protocol-Version`` >= 2026-07-28, else :data:`LEGACY`."""
    if protocol_version and protocol_version.strip() >= MODERN_VERSION:
        return MODERN
    return LEGACY


# -- headers ------------------------------------------------------------------------------------

REQUEST_HEADERS: Final = frozenset(
    {
        "accept",
        "content-type",
        "mcp-protocol-version",
        "mcp-session-id",
        "last-event-id",
        "mcp-method",
        "mcp-name",
        "traceparent",
        "tracestate",
        "baggage",
    }
)
"""Client request headers forwarded to the provider (plus ``mcp-param-*``, which an intermediary
MUST forward, and ``authorization`` for pass-through relays). Never Host, Origin or Cookie."""

REQUEST_PREFIXES: Final = ("mcp-param-",)

RESPONSE_HEADERS: Final = frozenset(
    {
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
        "www-authenticate",
        "cache-control",
        "retry-after",
        "allow",
    }
)
"""Provider response headers passed back to the client."""

META_PREFIX: Final = "x-nfrx-"
"""Headers under this prefix come from the server only; client-sent ones are dropped."""


class Meta:
    """The server's annotations on each tunnelled MCP exchange (request headers)."""

    ERA: Final = "x-nfrx-mcp-era"
    """:data:`LEGACY` or :data:`MODERN`."""
    KIND: Final = "x-nfrx-mcp-kind"
    """A :class:`Kind` for POSTs; ``stream`` for GET, ``delete`` for DELETE (also the server's own
    DELETE of a session it reaped), ``metadata`` for a pass-through relay's protected-resource
    metadata (path ``/.well-known/oauth-protected-resource``)."""
    ID: Final = "x-nfrx-mcp-id"
    """The request's JSON-RPC id as JSON text (requests only)."""
    METHOD: Final = "x-nfrx-mcp-method"
    """The JSON-RPC method (requests and notifications)."""
    IDLE: Final = "x-nfrx-mcp-idle"
    """Seconds of provider inactivity after which the call is abandoned (absent: exempt)."""
    PUBLIC_URL: Final = "x-nfrx-mcp-public-url"
    """The relay's public URL (pass-through relays rewrite ``resource_metadata`` with it)."""


def request_headers(
    pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...], *, passthrough_auth: bool
) -> list[tuple[str, str]]:
    """The client's headers that may reach the provider, names lower-cased."""
    kept: list[tuple[str, str]] = []
    for name, value in pairs:
        lower = name.lower()
        if (
            lower in REQUEST_HEADERS
            or lower.startswith(REQUEST_PREFIXES)
            or (passthrough_auth and lower == "authorization")
        ):
            kept.append((lower, value))
    return kept


def response_headers(
    pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...],
) -> list[tuple[str, str]]:
    """The provider's headers that may reach the client, names lower-cased."""
    return [(name.lower(), value) for name, value in pairs if name.lower() in RESPONSE_HEADERS]


CLIENT_CANCELLED: Final = "client_cancelled"
"""Reset code: the client posted ``notifications/cancelled`` for this request itself (it travels
as its own exchange), so the agent must not send another one to an HTTP provider."""

EXEMPT_METHODS: Final = frozenset({"initialize", "subscriptions/listen", "tasks/result"})
"""Requests the call timeout never cancels: ``initialize`` must not be cancelled (the spec), the
other two legitimately block."""


# -- JSON-RPC -----------------------------------------------------------------------------------


class Kind:
    REQUEST: Final = "request"
    NOTIFICATION: Final = "notification"
    RESPONSE: Final = "response"


class InvalidMessage(ValueError):
    """The body is not one JSON-RPC 2.0 message; the text says why (shown to the client), and
    :attr:`code` is the JSON-RPC error it deserves: ``-32700`` (parse error) for a body that is
    not JSON at all, ``-32600`` (invalid request) otherwise."""

    def __init__(self, message: str, *, code: int = INVALID_REQUEST) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class Message:
    """What the relay reads of a client message (the bytes themselves travel unchanged)."""

    kind: str
    id: str | None = None
    """The JSON text of the id (requests and responses)."""
    method: str = ""
    progress_token: str | None = None
    """JSON text of ``params._meta.progressToken``, if any."""
    cancelled_id: str | None = None
    """For ``notifications/cancelled``: the JSON text of ``params.requestId``."""
    protocol_version: str | None = None
    """``params._meta["io.modelcontextprotocol/protocolVersion"]`` (modern requests)."""


def _id_text(value: Any) -> str | None:
    # MCP ids are strings or integers (never null, never fractions, never booleans).
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return json.dumps(value)
    return None


def parse_message(body: bytes) -> Message:
    """Read one client message. Raises :class:`InvalidMessage`."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidMessage(f"the body is not JSON: {exc}", code=PARSE_ERROR) from exc
    if isinstance(obj, list):
        raise InvalidMessage("JSON-RPC batches are not supported (removed in MCP 2025-06-18)")
    if not isinstance(obj, dict):
        raise InvalidMessage("the body is not a JSON-RPC message object")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidMessage('the message lacks "jsonrpc": "2.0"')
    method = obj.get("method")
    if method is not None:
        return _call(obj, method)
    if "result" in obj or "error" in obj:
        response_id = _id_text(obj.get("id"))
        if response_id is None:
            raise InvalidMessage('a response "id" must be a string or an integer')
        return Message(Kind.RESPONSE, response_id)
    raise InvalidMessage("the message is neither a request, a notification nor a response")


def _call(obj: dict[str, Any], method: object) -> Message:
    """A request (it has an ``id``) or a notification; raises :class:`InvalidMessage`."""
    if not isinstance(method, str) or not method:
        raise InvalidMessage('"method" must be a non-empty string')
    params = obj.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidMessage('"params" must be an object')
    params = params or {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    progress_token = _id_text(meta.get("progressToken"))
    version = meta.get("io.modelcontextprotocol/protocolVersion")
    protocol_version = version if isinstance(version, str) else None
    if "id" in obj:
        request_id = _id_text(obj["id"])
        if request_id is None:
            raise InvalidMessage('a request "id" must be a string or an integer')
        return Message(
            Kind.REQUEST,
            request_id,
            method,
            progress_token=progress_token,
            protocol_version=protocol_version,
        )
    cancelled = None
    if method == "notifications/cancelled":
        cancelled = _id_text(params.get("requestId"))
    return Message(
        Kind.NOTIFICATION,
        None,
        method,
        progress_token=progress_token,
        cancelled_id=cancelled,
        protocol_version=protocol_version,
    )


class RelayCode:
    """``data.nfrx.code`` values."""

    TIMEOUT: Final = "MCP_TIMEOUT"
    PROVIDER_UNAVAILABLE: Final = "MCP_PROVIDER_UNAVAILABLE"
    LIMIT_EXCEEDED: Final = "MCP_LIMIT_EXCEEDED"
    UPSTREAM_ERROR: Final = "MCP_UPSTREAM_ERROR"
    UNAUTHORIZED: Final = "MCP_UNAUTHORIZED"
    FORBIDDEN: Final = "MCP_FORBIDDEN"
    SESSION_NOT_FOUND: Final = "MCP_SESSION_NOT_FOUND"
    RELAY_NOT_FOUND: Final = "MCP_RELAY_NOT_FOUND"
    INVALID_MESSAGE: Final = "MCP_INVALID_MESSAGE"
    DRAINING: Final = "MCP_DRAINING"


# -- SSE ----------------------------------------------------------------------------------------


@attrs.frozen
class SseEvent:
    raw: bytes
    """The event exactly as received, terminator included (forwarded verbatim)."""
    data: bytes
    """The data lines joined with LF (empty for a comment-only block)."""
    event: str = ""
    id: str | None = None

    @property
    def is_message(self) -> bool:
        """True when the event carries data (a JSON-RPC message), not only comments/fields."""
        return bool(self.data.strip())


class EventTooLarge(Exception):
    """One SSE event grew past the parser's limit."""


class SseParser:
    """Splits an SSE byte stream into events; accepts LF, CRLF and CR line ends (sse-starlette
    writes CRLF)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete event (what a stream that ends now leaves behind)."""
        return bytes(self._buffer)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while (end := self._event_end()) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[:end]
            events.append(_parse_event(raw))
        if len(self._buffer) > self.limit:
            raise EventTooLarge(f"an SSE event exceeds {self.limit} bytes")
        return events

    def _event_end(self) -> int:
        """Index just past the blank line ending the first event, or -1."""
        best = -1
        for terminator in _TERMINATORS:
            at = self._buffer.find(terminator)
            if at >= 0 and (best < 0 or at + len(terminator) < best):
                best = at + len(terminator)
        return best


_TERMINATORS: Final = (b"\r\n\r\n", b"\n\n", b"\r\r")


def _parse_event(raw: bytes) -> SseEvent:
    data: list[bytes] = []
    event = ""
    event_id: str | None = None
    for line in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            event_id = value.decode("utf-8", "replace")
    return SseEvent(raw=raw, data=b"\n".join(data), event=event, id=event_id)


def sse_message(message: bytes) -> bytes:
    """One SSE event carrying a JSON-RPC message."""
    return b"event: message\ndata: " + message + b"\n\n"
