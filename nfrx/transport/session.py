"""TunnelSession: Trio around the sans-I/O :class:`~nfrx.protocol.TunnelConnection`.

One session per WebSocket. :meth:`TunnelSession.run` owns every task of the tunnel:

* the **reader** -- the only caller of ``get_message``; it feeds the protocol and dispatches
  events without ever blocking (per-stream buffers are bounded by the credit the protocol
  enforces, so a stream whose consumer is slow holds at most one window of data and stalls only its
  own sender);
* the **writer** -- the only caller of ``send_message`` (a WebSocket frame must never be cut in half
  by a cancellation); everything else queues messages and returns at once;
* the **heartbeat** -- sends a Ping every ``heartbeat_interval`` and ends the session when
  nothing at all arrived from the peer for ``dead_after`` seconds;
* on the agent, one **handler task per incoming stream**, run inside the stream's cancel scope: a
  Reset from the server, the request's deadline or the end of the tunnel cancels it.

When the session ends -- the peer closed, a protocol error, silence, :meth:`close` -- every open
stream fails with :class:`TunnelClosed` and ``run`` returns normally (:attr:`closed_reason` says
why).
The outbound queue holds at most the credit granted on each live stream plus control frames.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from nfrx.protocol import (
    Credit,
    Data,
    Frame,
    LocalProtocolError,
    Open,
    Ping,
    Pong,
    RemoteProtocolError,
    Reset,
    ResetCode,
    Response,
    TunnelConnection,
    codec,
)
from nfrx.transport.errors import StreamReset, TransportClosed, TunnelClosed
from nfrx.transport.streams import IncomingStream, OutgoingStream, TunnelStream

if TYPE_CHECKING:
    from nfrx.transport.messages import MessageTransport

log = logging.getLogger("nfrx.tunnel")

StreamHandler = Callable[[IncomingStream], Awaitable[None]]
FrameHandler = Callable[[Frame], None]

BATCH_BYTES = 256 * 1024
"""The writer stops adding queued messages to a batch once it holds this many bytes."""

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011


@attrs.frozen(kw_only=True)
class TunnelSettings:
    """Sizes and times of one tunnel (both ends hold one; the agent's comes from Welcome)."""

    window: int = 256 * 1024
    """Body bytes we let the peer send on one stream before it must wait for our Credit."""
    max_frame_bytes: int = 64 * 1024
    """Largest Data payload we send in one WebSocket message."""
    heartbeat_interval: float = 5.0
    """Seconds between our Pings."""
    dead_after: float = 15.0
    """Seconds of complete silence from the peer before the tunnel is declared dead."""
    handshake_timeout: float = 10.0
    """Seconds allowed for Hello -> Welcome."""


class TunnelSession:
    """A live tunnel after its handshake. See the module docstring for the task structure."""

    def __init__(
        self,
        transport: MessageTransport,
        conn: TunnelConnection,
        settings: TunnelSettings,
        *,
        handler: StreamHandler | None = None,
        on_frame: FrameHandler | None = None,
        name: str = "",
    ) -> None:
        self.settings = settings
        self.name = name
        self.closed_reason: str | None = None
        self._transport = transport
        self._conn = conn
        self._handler = handler
        self._on_frame = on_frame
        self._streams: dict[int, TunnelStream] = {}
        self._stream_ids = itertools.count(1)
        self._ping_nonces = itertools.count(1)
        self._outbox: collections.deque[str | bytes] = collections.deque()
        self._outbox_ready = trio.lowlevel.ParkingLot()
        self._outbox_empty = trio.lowlevel.ParkingLot()
        self._last_heard = trio.current_time()
        self._messages_in = 0
        self._heard = trio.lowlevel.ParkingLot()
        self._close_code = CLOSE_NORMAL
        self._cancel_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.accepting = True
        """Agent side: when False, new incoming streams are reset as ``draining``."""
        self.finished = trio.Event()

    # -- lifetime ------------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[TunnelSession] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the tunnel until it ends; returns normally however it ends (see closed_reason).

        Cancelling the caller's scope ends it too (then ``closed_reason`` is "cancelled").
        """
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._heartbeat)
                    task_status.started(self)
                    await self._reader()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            if self.closed_reason is None:
                self.closed_reason = "cancelled"
            failure = TunnelClosed(self.closed_reason)
            for stream in list(self._streams.values()):
                stream._fail(failure)
            self._streams.clear()
            self.finished.set()
            with trio.move_on_after(1, shield=True):
                await self._transport.aclose(self._close_code, self.closed_reason[:120])

    def close(self, reason: str, code: int = CLOSE_NORMAL) -> None:
        """End the session now (idempotent, never blocks)."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self._close_code = code
        self._cancel_scope.cancel()

    async def flush_and_close(self, reason: str, *, grace: float = 1.0) -> None:
        """Let queued frames go out (for at most ``grace`` seconds), then close."""
        with trio.move_on_after(grace):
            while self._outbox and self._nursery is not None:
                await self._outbox_empty.park()
        self.close(reason)

    async def responsive(self, timeout: float) -> bool:
        """Ping the peer now: True if anything arrives from it within ``timeout`` seconds."""
        if self.closed:
            return False
        before = self._messages_in
        self._send_frame(Ping(nonce=next(self._ping_nonces)))
        with trio.move_on_after(timeout):
            while self._messages_in == before and not self.closed:
                await self._heard.park()
        return self._messages_in != before and not self.closed

    @property
    def last_heard(self) -> float:
        """``trio.current_time()`` when the last message from the peer arrived."""
        return self._last_heard

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    @property
    def live_streams(self) -> int:
        return len(self._streams)

    # -- server role ---------------------------------------------------------------------------

    def open_stream(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        *,
        timeout: float | None = None,
        end: bool = False,
    ) -> OutgoingStream:
        """Open a stream carrying an HTTP request head; never blocks.

        Raises :class:`TunnelClosed` if the tunnel has ended or the agent said goodbye.
        """
        if self.closed_reason is not None:
            raise TunnelClosed(self.closed_reason)
        stream_id = next(self._stream_ids)
        frame = Open(
            stream_id=stream_id, method=method, path=path, headers=headers, timeout=timeout, end=end
        )
        try:
            message = self._conn.send(frame)
        except LocalProtocolError as exc:
            raise TunnelClosed(f"cannot open a stream: {exc}") from None
        stream = OutgoingStream(self, stream_id, method)
        self._streams[stream_id] = stream
        self._enqueue(message)
        return stream

    # -- any role ------------------------------------------------------------------------------

    def send_control(self, frame: Frame) -> None:
        """Queue a connection-level frame (Status, Drain, Goodbye); dropped once closed."""
        if self.closed_reason is None:
            self._send_frame(frame)

    def _send_frame(self, frame: Frame) -> None:
        self._enqueue(self._conn.send(frame))
        stream_id = getattr(frame, "stream_id", None)
        if stream_id is not None:
            self._maybe_forget(stream_id)

    def _send_data(self, stream_id: int, payload: bytes, end: bool) -> None:
        self._enqueue(self._conn.send_data(stream_id, payload, end=end))
        if end:
            self._maybe_forget(stream_id)

    def _enqueue(self, message: str | bytes) -> None:
        if self.closed_reason is None:
            self._outbox.append(message)
            self._outbox_ready.unpark()

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def _maybe_forget(self, stream_id: int) -> None:
        if not self._conn.is_live(stream_id):
            self._streams.pop(stream_id, None)

    # -- tasks ---------------------------------------------------------------------------------

    async def _writer(self) -> None:
        # Whatever is queued when the writer gets to run goes out as one message (a batch): under
        # load, and for the head and body of one exchange queued together, that is one WebSocket
        # frame and one socket write instead of one per frame.
        outbox = self._outbox
        send_message = self._transport.send_message
        try:
            while True:
                while not outbox:
                    self._outbox_empty.unpark_all()
                    await self._outbox_ready.park()
                if len(outbox) == 1:
                    await send_message(outbox.popleft())
                    continue
                batch = [outbox.popleft()]
                size = len(batch[0])
                while outbox and size < BATCH_BYTES:
                    message = outbox.popleft()
                    batch.append(message)
                    size += len(message)
                await send_message(codec.encode_batch(batch))
        except TransportClosed as exc:
            self.close(f"connection closed ({exc.reason})", CLOSE_GOING_AWAY)

    async def _reader(self) -> None:
        conn = self._conn
        while True:
            try:
                message = await self._transport.get_message()
            except TransportClosed as exc:
                if self.closed_reason is None:
                    self.closed_reason = f"connection closed by peer ({exc.reason or exc.code})"
                return
            self._last_heard = trio.current_time()
            self._messages_in += 1
            self._heard.unpark_all()
            try:
                conn.receive(message)
            except RemoteProtocolError as exc:
                log.warning("%s: protocol error from peer: %s", self.name, exc)
                self.close(f"protocol error: {exc}", CLOSE_PROTOCOL_ERROR)
                return
            for frame in conn.events():
                self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        # The connection may have processed later frames of the same batch already (the stream
        # can look finished while its head is being dispatched): only a frame that ends its half
        # lets the session forget the stream.
        if isinstance(frame, Data):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._feed(frame.payload, frame.end)
                if frame.end:
                    self._maybe_forget(frame.stream_id)
        elif isinstance(frame, Response):
            stream = self._streams.get(frame.stream_id)
            if isinstance(stream, OutgoingStream):
                stream._set_response(frame)
                if frame.end:
                    self._maybe_forget(frame.stream_id)
        elif isinstance(frame, Credit):
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._credit_arrived()
        elif isinstance(frame, Reset):
            stream = self._streams.pop(frame.stream_id, None)
            if stream is not None:
                stream._fail(StreamReset(frame.code, frame.message, by_peer=True))
        elif isinstance(frame, Open):
            self._start_incoming(frame)
        elif isinstance(frame, Ping):
            self._send_frame(Pong(nonce=frame.nonce))
        elif isinstance(frame, Pong):
            pass  # arrival already refreshed _last_heard
        elif self._on_frame is not None:
            self._on_frame(frame)

    def _start_incoming(self, frame: Open) -> None:
        stream = IncomingStream(self, frame)
        self._streams[frame.stream_id] = stream
        if not self.accepting or self._handler is None or self._nursery is None:
            stream.reset(ResetCode.DRAINING, "agent is draining and accepts no new requests")
            return
        self._nursery.start_soon(self._run_handler, stream, self._handler)

    async def _run_handler(self, stream: IncomingStream, handler: StreamHandler) -> None:
        timeout = stream.request.timeout
        if timeout is not None:
            stream.cancel_scope.deadline = trio.current_time() + timeout
        try:
            with stream.cancel_scope:
                await handler(stream)
        except (StreamReset, TunnelClosed):
            pass
        except Exception as exc:
            log.exception("%s: handler for stream %d failed", self.name, stream.id)
            stream.reset(ResetCode.INTERNAL, f"agent error: {type(exc).__name__}")
        if stream.cancel_scope.cancelled_caught and stream.live:
            stream.reset(ResetCode.TIMEOUT, f"the agent's deadline of {timeout:g} s passed")
        elif stream.live:
            if stream._sent_end:
                stream.reset(ResetCode.CANCELLED, "response complete")
            else:
                stream.reset(ResetCode.INTERNAL, "agent ended the stream without a response")
        self._forget(stream.id)

    async def _heartbeat(self) -> None:
        interval = self.settings.heartbeat_interval
        dead_after = self.settings.dead_after
        next_ping = trio.current_time() + interval
        while True:
            await trio.sleep_until(min(next_ping, self._last_heard + dead_after))
            now = trio.current_time()
            if now - self._last_heard >= dead_after:
                log.warning("%s: peer silent for %.1f s; closing the tunnel", self.name, dead_after)
                self.close(f"peer silent for {dead_after:g} s", CLOSE_GOING_AWAY)
                return
            if now >= next_ping:
                self._send_frame(Ping(nonce=next(self._ping_nonces)))
                next_ping = now + interval
