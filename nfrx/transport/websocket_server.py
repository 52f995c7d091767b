"""The server's side of the WebSocket: quart-trio's ``websocket`` object on hypercorn.

Facts that shape this adapter: after the peer has gone, ``send`` returns at once *without a
checkpoint*, so a send loop could starve the event loop -- every send is followed by one; an empty
binary message arrives as ``None``; when the agent disconnects, quart-trio cancels the route, so
``get_message`` never needs to report a disconnect itself; when the agent closes its end while we
send, hypercorn may shut the socket down (``send_eof``, outside its send lock) under our send,
which then raises ``trio.BusyResourceError``: that is the peer going away, not an error of ours.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import trio

from nfrx.transport.errors import TransportClosed

if TYPE_CHECKING:
    from nfrx.transport.messages import Message


class ServerWebSocket:
    """:class:`~nfrx.transport.messages.MessageTransport` over quart's websocket object."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._closed = False

    async def send_message(self, message: Message) -> None:
        try:
            await self._ws.send(message)
        except trio.BusyResourceError as exc:
            raise TransportClosed("connection closing", 1006) from exc
        await trio.lowlevel.checkpoint()

    async def get_message(self) -> Message:
        message: Message | None = await self._ws.receive()
        return b"" if message is None else message

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(2, shield=True), contextlib.suppress(trio.BusyResourceError):
            await self._ws.close(code, reason)
