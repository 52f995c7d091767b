"""The agent's side of the WebSocket: trio-websocket, dialling out to the server.

trio-websocket's facts that shape this adapter: its default 1 MiB message limit and 4 KiB
receive buffer are raised; ``send_message`` must never be cancelled mid-frame (the session's single
writer guarantees it); its own WebSocket pings are not used (the tunnel has Ping frames), which
also avoids its ping-during-close crash.
"""

from __future__ import annotations

import ssl
import urllib.parse
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
import trio_websocket

from nfrx.transport.errors import HandshakeFailed, HandshakeRefused, TransportClosed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nfrx.transport.messages import Message

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RECEIVE_BUFFER_BYTES = 64 * 1024


class AgentWebSocket:
    """:class:`~nfrx.transport.messages.MessageTransport` over a trio-websocket connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send_message(self, message: Message) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosed(_reason(exc), _code(exc)) from exc

    async def get_message(self) -> Message:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosed(_reason(exc), _code(exc)) from exc

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        with trio.move_on_after(1, shield=True):
            await self._ws.aclose(code, reason or None)


def _code(exc: trio_websocket.ConnectionClosed) -> int | None:
    return int(exc.reason.code) if exc.reason is not None else None


def _reason(exc: trio_websocket.ConnectionClosed) -> str:
    if exc.reason is None:
        return "closed"
    return exc.reason.reason or exc.reason.name


@asynccontextmanager
async def connect(
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None = None,
    connect_timeout: float = 10.0,
) -> AsyncIterator[AgentWebSocket]:
    """Dial ``url`` (ws:// or wss://) with ``headers`` on the upgrade request.

    Raises :class:`HandshakeRefused` if the server rejected the upgrade with an HTTP status (for
    example 401 for a wrong client key) and :class:`HandshakeFailed` if it could not be reached
    or its certificate is not trusted.
    """
    if url.lower().startswith("wss://"):
        ssl_context = ssl_context or ssl.create_default_context()
        await _check_certificate(url, ssl_context, connect_timeout)
    try:
        async with trio_websocket.open_websocket_url(
            url,
            ssl_context=ssl_context,
            extra_headers=headers,
            max_message_size=MAX_MESSAGE_BYTES,
            receive_buffer_size=RECEIVE_BUFFER_BYTES,
            connect_timeout=connect_timeout,
            disconnect_timeout=2,
        ) as ws:
            yield AgentWebSocket(ws)
    except trio_websocket.ConnectionRejected as exc:
        body = (exc.body or b"").decode("utf-8", "replace").strip()
        raise HandshakeRefused(f"http_{exc.status_code}", body or "upgrade rejected") from exc
    except trio_websocket.ConnectionTimeout as exc:
        raise HandshakeFailed(f"timed out connecting to {url}") from exc
    except (OSError, trio_websocket.HandshakeError) as exc:
        raise HandshakeFailed(f"cannot connect to {url}: {exc}") from exc


async def _check_certificate(url: str, context: ssl.SSLContext, timeout: float) -> None:
    """A TLS handshake on a connection of its own, closed at once.

    trio-websocket swallows TLS errors (its reader task turns them into an abnormal close, and
    the opening handshake then waits for its timeout), so an untrusted certificate would look
    like a timeout. This costs one extra TLS connection per tunnel, and says what is wrong.
    """
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_ssl_over_tcp_stream(
                host, parsed.port or 443, ssl_context=context, https_compatible=True
            )
            try:
                await stream.do_handshake()
            finally:
                await trio.aclose_forcefully(stream)
    except trio.TooSlowError as exc:
        raise HandshakeFailed(f"timed out connecting to {url}") from exc
    except trio.BrokenResourceError as exc:
        # trio's SSLStream wraps TLS failures (an unknown CA, a wrong host name) in this.
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = f"certificate verify failed: {cause.verify_message}"
        else:
            reason = f"TLS handshake failed: {cause or exc}"
        raise HandshakeFailed(f"cannot connect to {url}: {reason}") from exc
    except OSError as exc:
        raise HandshakeFailed(f"cannot connect to {url}: {exc}") from exc


def tls_context(url: str, ca_file: str = "") -> ssl.SSLContext | None:
    """The context that verifies a ``wss://`` server: the system's CAs, or only ``ca_file``'s.

    None for ``ws://``. Raises ``OSError`` / ``ssl.SSLError`` for an unusable ``ca_file`` (the
    config loader has already checked it).
    """
    if not url.lower().startswith("wss://"):
        return None
    return ssl.create_default_context(cafile=ca_file or None)
