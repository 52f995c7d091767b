"""Backpressure for request bodies: the client's upload moves only as fast as nfrx reads it.

Quart's request body is an unbounded buffer: its ASGI receiver appends every chunk hypercorn hands
it, whether or not the handler reads. For uploads relayed chunk by chunk into a tunnel (whose
credits pace them to the agent and its backend), that buffer would grow by the difference in
speed. :class:`BoundedConnection` stops receiving while :data:`HIGH_WATER` bytes wait unread; then
hypercorn's own bounded queue fills, it stops reading the socket, and TCP slows the client down.

A handler that awaits the whole body at once (``await request.body``) lifts the bound for that
request, since it could never be met otherwise.

Every read of a body goes through :func:`next_chunk`, which holds the client to ``BODY_TIMEOUT``:
a client that stops sending (a trickle that stalls, or a Content-Length it never meets) is
answered 408 (:class:`BodyTimeout`) instead of holding its connection and handler forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator

    from hypercorn.typing import ASGIReceiveCallable
    from quart.wrappers import Request

HIGH_WATER = 1024 * 1024
"""Unread request bytes at which the receiver waits for the handler."""


class BodyTimeout(HttpError):
    """No byte of the request body arrived for ``BODY_TIMEOUT`` seconds: 408 (the app's error
    handler closes the connection, which may still carry the rest of the body)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            "body_timeout",
            f"the request body stalled: nothing arrived for {seconds:g} s",
            type="invalid_request_error",
        )
        self.seconds = seconds


async def next_chunk(body: AsyncIterator[bytes], idle: float) -> bytes | None:
    """The next chunk of a request body, or None at its end; raises :class:`BodyTimeout` when
    none arrives within ``idle`` seconds."""
    with trio.move_on_after(idle):
        try:
            return await anext(body)
        except StopAsyncIteration:
            return None
    raise BodyTimeout(idle)


class BoundedBody(TrioBody):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._read = trio.Event()
        self._whole = False

    async def __anext__(self) -> bytes:
        try:
            return await super().__anext__()
        finally:
            self._read.set()

    def __await__(self) -> Generator[object, None, bytes]:
        self._whole = True
        self._read.set()
        data: bytes = yield from super().__await__()
        return data

    async def wait_below_high_water(self) -> None:
        """Return once the unread part is below :data:`HIGH_WATER` (or nobody will read it in
        parts)."""
        while (
            len(self._data) >= HIGH_WATER
            and not self._whole
            and self._must_raise is None
            and not self._complete.is_set()
        ):
            self._read = trio.Event()
            await self._read.wait()


class BoundedRequest(TrioRequest):
    body_class = BoundedBody


class BoundedConnection(TrioASGIHTTPConnection):
    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        while True:
            if isinstance(body, BoundedBody):
                await body.wait_below_high_water()
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()
