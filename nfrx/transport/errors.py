"""Errors of the Trio tunnel layer. Exceptions of trio-websocket, quart and the protocol package
become one of these exactly once, in the adapters and the session (``raise ... from``)."""

from __future__ import annotations


class TunnelError(Exception):
    """Base class of the transport's errors."""


class TransportClosed(TunnelError):
    """The WebSocket under a tunnel is closed (by either side, cleanly or not)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class TunnelClosed(TunnelError):
    """The tunnel a stream belonged to has ended; the stream cannot continue."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamReset(TunnelError):
    """A stream was abandoned with a reason code (see :class:`nfrx.protocol.ResetCode`)."""

    def __init__(self, code: str, message: str, *, by_peer: bool) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.by_peer = by_peer


class HandshakeRefused(TunnelError):
    """The server answered our Hello with Refuse."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class HandshakeFailed(TunnelError):
    """The handshake did not complete: timeout, closed socket, or an invalid first frame."""
