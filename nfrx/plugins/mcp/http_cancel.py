"""An HTTP provider's request the agent abandons: when the provider must be told, and how.

The tunnel session cancels a stream's handler when the server resets the stream, when the tunnel
ends or when ``Open.timeout`` passes; leaving ``client.stream()`` under cancellation closes the
provider connection (HTTP/1.1), which is the whole cancellation for the modern era. A legacy
provider does not treat a closed stream as cancellation (the spec says it SHOULD NOT), so for a
legacy *request* that had no final response yet (never ``initialize``) the agent also POSTs
``notifications/cancelled`` for it (:func:`tell_provider`), shielded and bounded by
:data:`CANCEL_GRACE`, unless the server's reset code says the client already sent its own
(:data:`~nfrx.plugins.mcp.wire.CLIENT_CANCELLED`).

Pieces: :class:`FinalWatch` reads a copy of the provider's answer for the final response (after
it there is nothing to cancel); :class:`IdleClock` is the agent's own inactivity limit for one
request (a cancel scope whose deadline activity pushes back, paused while the agent waits for the
tunnel: :func:`paused`); :func:`cancel_reason` says why a request was abandoned and whether to
tell the provider. Nothing here blocks except :func:`tell_provider` (bounded).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Final

import httpx
import trio

from nfrx.plugins.mcp import wire
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from nfrx.transport.streams import IncomingStream

log = logging.getLogger("nfrx.mcp")

CANCEL_GRACE: Final = 5.0
"""Most seconds the shielded ``notifications/cancelled`` POST may take after a cancellation."""

WATCH_LIMIT: Final = 16 * 1024 * 1024
"""Largest SSE event the agent inspects for the final response (bigger ones are forwarded
untouched; the request is then treated as still unanswered, and a later cancel is harmless)."""

ACCEPT_BOTH: Final = "application/json, text/event-stream"


class IdleClock:
    """One request's inactivity deadline: pushed back by any activity, paused while the agent
    itself waits for the tunnel (a slow client is not a silent provider)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.scope = trio.CancelScope()
        self.paused = False
        self.bump()

    def bump(self) -> None:
        if not self.paused:
            self.scope.deadline = trio.current_time() + self.limit

    def pause(self) -> None:
        self.paused = True
        self.scope.deadline = math.inf

    def resume(self) -> None:
        self.paused = False
        self.bump()


class FinalWatch:
    """Watches a copy of the provider's answer for the final response to one request id."""

    def __init__(self, request_id: str | None) -> None:
        self.request_id = request_id
        self.answered = False
        self._parser: wire.SseParser | None = wire.SseParser(WATCH_LIMIT)

    def feed(self, chunk: bytes) -> None:
        if self.answered or self._parser is None or self.request_id is None:
            return
        try:
            events = self._parser.feed(chunk)
        except wire.EventTooLarge:
            self._parser = None
            return
        for event in events:
            if event.is_message and _is_response_to(event.data, self.request_id):
                self.answered = True
                return


def _is_response_to(data: bytes, request_id: str) -> bool:
    try:
        message = wire.parse_message(data)
    except wire.InvalidMessage:
        return False
    return message.kind == wire.Kind.RESPONSE and message.id == request_id


def valid_id(text: str | None) -> str | None:
    """``text`` if it is the JSON of a string or an integer (an id to splice), else None."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return text
    return None


def cancelled_notification(request_id: str, reason: str) -> bytes:
    """``notifications/cancelled`` for ``request_id`` (JSON text, spliced verbatim)."""
    return (
        '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":'
        + request_id
        + ',"reason":'
        + json.dumps(reason)
        + "}}"
    ).encode()


def cancel_reason(stream: IncomingStream, idle_fired: bool) -> tuple[str, bool]:
    """Why the request is abandoned, and whether the provider should be told (it should not
    when the client sent its own ``notifications/cancelled``)."""
    if idle_fired:
        return "nfrx: the provider was inactive past the call timeout", True
    failure = stream.failure
    if isinstance(failure, StreamReset):
        if failure.code == wire.CLIENT_CANCELLED:
            return "", False
        if failure.code == ResetCode.TIMEOUT:
            return "nfrx: the call timed out", True
        return f"nfrx: the request was abandoned ({failure.code})", True
    if isinstance(failure, TunnelClosed):
        return "nfrx: the relay lost its tunnel to the server", True
    return "nfrx: the call reached its time limit", True


async def paused(clock: IdleClock | None, send: Awaitable[None]) -> None:
    """Await a tunnel send with the idle clock paused (waiting for credit is not inactivity)."""
    if clock is None:
        await send
        return
    clock.pause()
    try:
        await send
    finally:
        clock.resume()


async def tell_provider(
    client: httpx.AsyncClient,
    url: str,
    headers: list[tuple[str, str]],
    request_id: str,
    reason: str,
) -> None:
    """Tell a legacy provider its request is abandoned (with the request's session): a
    ``notifications/cancelled`` POST, shielded and bounded by :data:`CANCEL_GRACE`, best effort."""
    keep = {"mcp-session-id", "mcp-protocol-version", "authorization"}
    cancel_headers = [(k, v) for k, v in headers if k in keep]
    cancel_headers += [
        ("content-type", "application/json"),
        ("accept", ACCEPT_BOTH),
        ("accept-encoding", "identity"),
    ]
    body = cancelled_notification(request_id, reason)
    with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_GRACE):
        try:
            async with client.stream("POST", url, headers=cancel_headers, content=body) as r:
                log.debug("notifications/cancelled for %s: HTTP %d", request_id, r.status_code)
        except httpx.HTTPError as exc:
            log.debug("notifications/cancelled for %s failed: %s", request_id, exc)
