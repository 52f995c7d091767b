"""The message-transport interface the tunnel session runs over, and an in-memory pair for tests.

A transport moves whole WebSocket messages (``str`` for text, ``bytes`` for binary). Adapters for
the real sockets live in :mod:`nfrx.transport.websocket_agent` and
:mod:`nfrx.transport.websocket_server`.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import attrs
import trio

from nfrx.transport.errors import TransportClosed

Message = str | bytes


class MessageTransport(Protocol):
    """What :class:`~nfrx.transport.session.TunnelSession` needs from a WebSocket.

    ``send_message`` is only ever called by one task at a time (the session's writer), and
    ``get_message`` by one task (its reader). Both raise :class:`TransportClosed` once the socket
    is closed. ``aclose`` is idempotent and bounded in time.
    """

    async def send_message(self, message: Message) -> None: ...

    async def get_message(self) -> Message: ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...


@attrs.define(eq=False)
class _Closed:
    code: int
    reason: str


@attrs.define(eq=False)
class MemoryTransport:
    """One end of an in-memory transport pair: a bounded channel each way."""

    _send: trio.MemorySendChannel[Message | _Closed]
    _receive: trio.MemoryReceiveChannel[Message | _Closed]
    _closed: TransportClosed | None = None
    _frozen: bool = False

    async def send_message(self, message: Message) -> None:
        if self._frozen:
            await trio.sleep_forever()
        if self._closed is not None:
            raise self._closed
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TransportClosed("peer closed", 1006) from exc

    async def get_message(self) -> Message:
        if self._frozen:
            await trio.sleep_forever()
        if self._closed is not None:
            raise self._closed
        try:
            item = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            self._closed = TransportClosed("peer went away", 1006)
            raise self._closed from exc
        if isinstance(item, _Closed):
            self._closed = TransportClosed(item.reason, item.code)
            raise self._closed
        return item

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._frozen:
            return
        if self._closed is None:
            self._closed = TransportClosed(reason or "closed locally", code)
        gone = (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError)
        with contextlib.suppress(*gone):
            self._send.send_nowait(_Closed(code, reason))
        self._send.close()
        await trio.lowlevel.checkpoint()

    def freeze(self) -> None:
        """Stop this end silently, as a SIGSTOPped process would: nothing more goes either way,
        and no close is ever sent."""
        self._frozen = True

    def abort(self) -> None:
        """Drop the connection without a close message (a crash or a cut cable)."""
        self._send.close()
        self._receive.close()


def memory_transport_pair(buffer: int = 16) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports (for tests): ``(server_end, agent_end)``."""
    a_send, b_receive = trio.open_memory_channel[Message | _Closed](buffer)
    b_send, a_receive = trio.open_memory_channel[Message | _Closed](buffer)
    return MemoryTransport(a_send, a_receive), MemoryTransport(b_send, b_receive)
