"""The two ends of a tunnel stream as seen by application code.

A stream is owned by the task that opened it (server) or by the handler task the session started
for it (agent). Everything here that waits does so on the stream's own state, so a slow consumer
of one stream never delays any other: the session's reader only appends to a buffer whose size the
protocol's credit bounds, and wakes the waiters.

The server's end checks what the agent answers before anyone reads it: a response head no HTTP
client may be sent (:func:`nfrx.headers.check_response_head`), or a body that does not match the
head's ``content-length``, resets the stream with ``bad_agent_response`` (the agent then cancels
its backend request) and fails it locally with that :class:`StreamReset`, which every relay
already turns into an error for its client. Nothing else of the tunnel is touched.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

import trio

from nfrx.headers import check_response_head, declared_length
from nfrx.protocol import Credit, Headers, Open, Reset, ResetCode, Response
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from nfrx.transport.session import TunnelSession

log = logging.getLogger("nfrx.tunnel")

_BODYLESS_STATUSES = frozenset({204, 304})
"""Statuses whose ``content-length`` describes no body that follows (RFC 9110 8.6)."""


class TunnelStream:
    """State shared by both ends: the inbound body buffer, credit waits and failure."""

    def __init__(self, session: TunnelSession, stream_id: int) -> None:
        self.id = stream_id
        self._session = session
        self._chunks: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._failure: StreamReset | TunnelClosed | None = None
        self._unacknowledged = 0
        self._readable = trio.lowlevel.ParkingLot()
        self._writable = trio.lowlevel.ParkingLot()
        self._sent_end = False

    # -- called by the session's reader (never block) ----------------------------------------

    def _feed(self, payload: bytes, end: bool) -> None:
        if payload:
            self._chunks.append(payload)
        if end:
            self._eof = True
        self._readable.unpark_all()

    def _credit_arrived(self) -> None:
        self._writable.unpark_all()

    def _fail(self, failure: StreamReset | TunnelClosed) -> None:
        if self._failure is None:
            self._failure = failure
        self._readable.unpark_all()
        self._writable.unpark_all()

    # -- inbound body --------------------------------------------------------------------------

    async def receive_some(self) -> bytes:
        """Every body byte of the peer's that has arrived and not been read yet, in order --
        waiting only while there is none -- or ``b""`` once the body has ended.

        What arrived in several Data frames since the last call comes out as one piece (at most
        one credit window), so a consumer that writes what it reads makes one write per burst,
        not one per frame; a frame that arrives alone is returned at once, never held back to
        wait for more.

        Raises :class:`StreamReset` or :class:`TunnelClosed` if the stream failed before the end
        of the body was received (data already buffered is still delivered first).
        """
        chunks = self._chunks
        while not chunks:
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            if self._failure is not None:
                await trio.lowlevel.checkpoint()
                raise self._failure
            await self._readable.park()
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._acknowledge(len(data))
        await trio.lowlevel.checkpoint()
        return data

    def _acknowledge(self, size: int) -> None:
        # Return credit in batches of half a window: one Credit frame per ~window/2 bytes read.
        self._unacknowledged += size
        if self._eof or self._failure is not None:
            return
        if self._unacknowledged >= self._session.settings.window // 2:
            increment, self._unacknowledged = self._unacknowledged, 0
            self._session._send_frame(Credit(stream_id=self.id, increment=increment))

    def buffered_body(self) -> bytes | None:
        """The whole remaining body if all of it has arrived already (taken, without waiting),
        else None (nothing is taken)."""
        if not self._eof or self._failure is not None:
            return None
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._unacknowledged += len(body)
        return body

    async def receive_all(self, limit: int) -> bytes:
        """The whole remaining body; raises ``ValueError`` if it exceeds ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while chunk := await self.receive_some():
            size += len(chunk)
            if size > limit:
                raise ValueError(f"body larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    # -- outbound body -------------------------------------------------------------------------

    async def send_data(self, payload: bytes | memoryview, *, end: bool = False) -> None:
        """Queue ``payload`` (split to frames within the peer's credit), waiting for credit.

        Raises :class:`StreamReset` or :class:`TunnelClosed` if the stream fails meanwhile.
        """
        session = self._session
        view = memoryview(payload)
        max_frame = session.settings.max_frame_bytes
        while True:
            if self._failure is not None:
                raise self._failure
            if not view and not end:
                await trio.lowlevel.checkpoint()
                return
            credit = session._conn.credit(self.id)
            if view and credit == 0:
                await self._writable.park()
                continue
            size = min(len(view), credit, max_frame)
            last = end and size == len(view)
            session._send_data(self.id, bytes(view[:size]), last)
            view = view[size:]
            if last:
                self._sent_end = True
                await trio.lowlevel.checkpoint()
                return
            if not view and not end:
                await trio.lowlevel.checkpoint()
                return

    async def end(self) -> None:
        """End this side's body (a zero-length final Data frame)."""
        await self.send_data(b"", end=True)

    # -- abandoning ----------------------------------------------------------------------------

    @property
    def failure(self) -> StreamReset | TunnelClosed | None:
        """Why the stream failed (a Reset from either side, or the tunnel's end), or None.

        A handler cancelled by the peer's Reset reads the peer's reason code here, in its
        ``finally``, to decide how to abandon its own work.
        """
        return self._failure

    @property
    def live(self) -> bool:
        """True until the exchange finished or failed."""
        return self._failure is None and self._session._conn.is_live(self.id)

    def reset(self, code: str = ResetCode.CANCELLED, message: str = "") -> None:
        """Abandon the stream now and tell the peer why. Never blocks; safe in ``finally``.

        A no-op once the stream has finished or failed.
        """
        if self._failure is None:
            self._fail(StreamReset(code, message, by_peer=False))
        if self._session._conn.is_live(self.id):
            self._session._send_frame(Reset(stream_id=self.id, code=code, message=message))
        self._session._forget(self.id)


class OutgoingStream(TunnelStream):
    """The server's end: it sent the request head and reads the agent's response."""

    def __init__(self, session: TunnelSession, stream_id: int, method: str = "POST") -> None:
        super().__init__(session, stream_id)
        self.method = method
        self._response: Response | None = None
        self._response_arrived = trio.Event()
        self._expected: int | None = None
        """Body bytes the head's ``content-length`` announced (None: not counted)."""
        self._received = 0

    def _set_response(self, frame: Response) -> None:
        problem = check_response_head(frame.status, frame.headers)
        if problem is None and self.method != "HEAD" and frame.status not in _BODYLESS_STATUSES:
            self._expected = declared_length(frame.headers)
            if frame.end and self._expected:
                problem = f"content-length {self._expected} but no body"
        if problem is not None:
            self._refuse(problem)
            return
        self._response = frame
        if frame.end:
            self._eof = True
        self._response_arrived.set()

    def _feed(self, payload: bytes, end: bool) -> None:
        expected = self._expected
        if expected is not None:
            self._received += len(payload)
            if self._received > expected:
                self._refuse(f"body longer than its content-length of {expected} bytes")
                return
            if end and self._received < expected:
                self._refuse(
                    f"body of {self._received} bytes, shorter than its content-length of "
                    f"{expected} bytes"
                )
                return
        super()._feed(payload, end)

    def _refuse(self, problem: str) -> None:
        """Reject the agent's answer: log it, reset the stream (the agent cancels its work)."""
        log.warning(
            "%s: stream %d: bad response from the agent (%s); stream reset",
            self._session.name,
            self.id,
            problem,
        )
        self.reset(ResetCode.BAD_AGENT_RESPONSE, problem)

    def _fail(self, failure: StreamReset | TunnelClosed) -> None:
        super()._fail(failure)
        self._response_arrived.set()

    async def receive_response(self) -> Response:
        """Wait for the agent's response head. Raises StreamReset/TunnelClosed on failure --
        also when the head arrived but its body was refused already (a ``content-length``
        mismatch in the same batch), so that the client gets an error, not a broken body."""
        await self._response_arrived.wait()
        failure = self._failure
        if self._response is None or (
            isinstance(failure, StreamReset) and failure.code == ResetCode.BAD_AGENT_RESPONSE
        ):
            assert failure is not None
            raise failure
        return self._response

    @property
    def responded(self) -> bool:
        return self._response is not None


class IncomingStream(TunnelStream):
    """The agent's end: it received the request head and writes the response.

    The session runs the stream's handler inside :attr:`cancel_scope`; a Reset from the server,
    the tunnel's end or the request's deadline cancels it.
    """

    def __init__(self, session: TunnelSession, request: Open) -> None:
        super().__init__(session, request.stream_id)
        self.request = request
        self.cancel_scope = trio.CancelScope()
        self.responded = False
        if request.end:
            self._eof = True

    def _fail(self, failure: StreamReset | TunnelClosed) -> None:
        super()._fail(failure)
        if not (isinstance(failure, StreamReset) and not failure.by_peer):
            self.cancel_scope.cancel()

    async def send_response(
        self, status: int, headers: Headers, *, end: bool = False, data: bytes = b""
    ) -> None:
        """Send the response head, and ``data`` as the first body bytes right behind it (then
        ``end`` ends the body after them). Raises StreamReset/TunnelClosed if the stream failed.

        The head and the data are queued together, so the session's writer can put them in one
        WebSocket message.
        """
        if self._failure is not None:
            raise self._failure
        self._session._send_frame(
            Response(stream_id=self.id, status=status, headers=headers, end=end and not data)
        )
        self.responded = True
        if data:
            await self.send_data(data, end=end)
            return
        if end:
            self._sent_end = True
        await trio.lowlevel.checkpoint()
