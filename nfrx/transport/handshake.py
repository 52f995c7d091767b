"""The tunnel handshake on both sides: Hello -> Welcome, or an explicit Refuse.

The server authenticates the agent on the WebSocket upgrade request, before any frame; what is
decided here is whether the *protocol* conversation may start (version, identity).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from nfrx.protocol import (
    Hello,
    ProtocolError,
    Refuse,
    Role,
    TunnelConnection,
    Welcome,
)
from nfrx.transport.errors import HandshakeFailed, HandshakeRefused, TransportClosed

if TYPE_CHECKING:
    from nfrx.transport.messages import MessageTransport


async def agent_handshake(
    transport: MessageTransport, hello: Hello, *, timeout: float
) -> tuple[TunnelConnection, Welcome]:
    """Send ``hello`` and wait (at most ``timeout`` s) for the server's answer.

    Raises :class:`HandshakeRefused` (the server said no, with a reason) or
    :class:`HandshakeFailed` (no valid answer in time, or the socket closed).
    """
    conn = TunnelConnection(Role.AGENT)
    try:
        with trio.fail_after(timeout):
            await transport.send_message(conn.send(hello))
            conn.receive(await transport.get_message())
    except trio.TooSlowError as exc:
        raise HandshakeFailed(f"no answer to hello within {timeout:g} s") from exc
    except TransportClosed as exc:
        raise HandshakeFailed(f"connection closed during the handshake ({exc.reason})") from exc
    except ProtocolError as exc:
        raise HandshakeFailed(f"invalid answer to hello: {exc}") from exc
    (frame,) = conn.events()
    if isinstance(frame, Refuse):
        raise HandshakeRefused(frame.code, frame.message)
    assert isinstance(frame, Welcome)  # the state table admits only Welcome or Refuse here
    return conn, frame


async def receive_hello(
    transport: MessageTransport, *, timeout: float
) -> tuple[TunnelConnection, Hello]:
    """Server side: wait (at most ``timeout`` s) for the agent's Hello.

    The caller then answers with ``conn.send(Welcome(...))`` or ``conn.send(Refuse(...))``.
    Raises :class:`HandshakeFailed`.
    """
    conn = TunnelConnection(Role.SERVER)
    try:
        with trio.fail_after(timeout):
            conn.receive(await transport.get_message())
    except trio.TooSlowError as exc:
        raise HandshakeFailed(f"no hello within {timeout:g} s") from exc
    except TransportClosed as exc:
        raise HandshakeFailed(f"connection closed before hello ({exc.reason})") from exc
    except ProtocolError as exc:
        raise HandshakeFailed(f"invalid hello: {exc}") from exc
    (frame,) = conn.events()
    assert isinstance(frame, Hello)
    return conn, frame
