"""TunnelSession: Trio around the sans-I/O :class:`~nfrx.protocol.TunnelConnection`.

One session per WebSocket. :meth:`TunnelSession.run` owns every task of the tunnel:

* the **reader** -- the only caller of ``get_message``; it feeds the protocol and dispatches
  events without ever blocking (per-stream buffers are bounded by the credit the protocol
  enforces, so a stream whose consumer is slow holds at most one window of data and stalls only its
  own sender). It processes a batch frame by frame, in order, and lets the other tasks of the
  process run every :data:`CHECKPOINT_FRAMES` frames: a peer's burst cannot hold the event loop;
* the **writer** -- the only caller of ``send_message`` (a WebSocket frame must never be cut in half
  by a cancellation); everything else queues messages and returns at once;
* the **heartbeat** -- sends a Ping every ``heartbeat_interval`` and ends the session when
  nothing at all arrived from the peer for ``dead_after`` seconds, or when the writer has been
  stuck in one send for that long (a peer that does not read is as dead as a silent one);
* on the agent, one **handler task per incoming stream**, run inside the stream's cancel scope: a
  Reset from the server, the request's deadline or the end of the tunnel cancels it.

When the session ends -- the peer closed, a protocol error, silence, :meth:`close` -- every open
stream fails with :class:`TunnelClosed` at once and ``run`` returns normally (:attr:`closed_reason`
says why).

The outbound queue is bounded: Data frames by the credit granted on each live stream, control
frames by :attr:`TunnelSettings.max_queued_control_bytes` (a peer that lets more pile up is not
reading: the session closes). Pongs never queue: one Pong, with the newest nonce, answers all the
Pings of a message and replaces a Pong the writer has not sent yet.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
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
"""The writer stops adding queued messages to a batch once it holds this many bytes (or
:data:`~nfrx.protocol.codec.MAX_BATCH_FRAMES` messages)."""

CHECKPOINT_FRAMES = 32
"""The reader yields to the other tasks after this many frames of one batch."""

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
    max_queued_control_bytes: int = 4 * 1024 * 1024
    """Control frames (everything but Data) that may wait for the writer, in characters of JSON
    text (bytes, for ASCII); more means the peer is not reading, and the session closes."""


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
        self._queued_control = 0
        """Characters of control frames in ``_outbox``."""
        self._ping_seen: int | None = None
        """The nonce of the newest Ping of the message being read."""
        self._pong_due: int | None = None
        """The nonce of the newest Ping not answered yet (the writer sends its Pong)."""
        self._sending_since: float | None = None
        """When the writer's current ``send_message`` started (None: not sending)."""
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
            self._fail_streams(self.closed_reason)
            self.finished.set()
            with trio.move_on_after(1, shield=True):
                await self._transport.aclose(self._close_code, self.closed_reason[:120])

    def close(self, reason: str, code: int = CLOSE_NORMAL) -> None:
        """End the session now (idempotent, never blocks): every open stream fails at once, even
        while the writer is stuck in a send that cannot be interrupted."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self._close_code = code
        self._cancel_scope.cancel()
        self._fail_streams(self.closed_reason)

    def _fail_streams(self, reason: str) -> None:
        if self._streams:
            failure = TunnelClosed(reason)
            for stream in list(self._streams.values()):
                stream._fail(failure)
            self._streams.clear()

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
        slot: bool = True,
    ) -> OutgoingStream:
        """Open a stream carrying an HTTP request head; never blocks. ``slot``: the stream holds
        one of the agent's slots (:attr:`nfrx.protocol.frames.Open.slot`).

        Raises :class:`TunnelClosed` if the tunnel has ended or the agent said goodbye.
        """
        if self.closed_reason is not None:
            raise TunnelClosed(self.closed_reason)
        stream_id = next(self._stream_ids)
        frame = Open(
            stream_id=stream_id,
            method=method,
            path=path,
            headers=headers,
            timeout=timeout,
            end=end,
            slot=slot,
        )
        try:
            message = self._conn.send(frame)
        except LocalProtocolError as exc:
            raise TunnelClosed(f"cannot open a stream: {exc}") from exc
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
        if self.closed_reason is not None:
            return
        if isinstance(message, str):
            self._queued_control += len(message)
            if self._queued_control > self.settings.max_queued_control_bytes:
                limit = self.settings.max_queued_control_bytes
                log.warning(
                    "%s: more than %d bytes of control frames wait for the peer; it is not "
                    "reading: closing the tunnel",
                    self.name,
                    limit,
                )
                self.close(
                    f"peer not reading ({limit} bytes of control frames queued)", CLOSE_POLICY
                )
                return
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
                while not outbox and self._pong_due is None:
                    self._outbox_empty.unpark_all()
                    await self._outbox_ready.park()
                batch = self._next_batch()
                self._sending_since = trio.current_time()
                await send_message(batch[0] if len(batch) == 1 else codec.encode_batch(batch))
                self._sending_since = None
        except TransportClosed as exc:
            self.close(f"connection closed ({exc.reason})", CLOSE_GOING_AWAY)

    def _next_batch(self) -> list[str | bytes]:
        """Take what the writer sends next: the Pong due, then queued messages, in order, up to
        BATCH_BYTES and MAX_BATCH_FRAMES."""
        batch: list[str | bytes] = []
        if self._pong_due is not None:
            batch.append(self._conn.send(Pong(nonce=self._pong_due)))
            self._pong_due = None
        outbox = self._outbox
        size = 0
        limit = codec.MAX_BATCH_FRAMES
        while outbox and size < BATCH_BYTES and len(batch) < limit:
            message = outbox.popleft()
            if isinstance(message, str):
                self._queued_control -= len(message)
            batch.append(message)
            size += len(message)
        return batch

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
                if isinstance(message, str) or not codec.is_batch(message):
                    conn.receive(message)
                    for frame in conn.events():
                        self._dispatch(frame)
                else:
                    await self._receive_batch(message)
            except RemoteProtocolError as exc:
                log.warning("%s: protocol error from peer: %s", self.name, exc)
                self.close(f"protocol error: {exc}", CLOSE_PROTOCOL_ERROR)
                return
            if self.closed_reason is not None:
                return
            if self._ping_seen is not None:
                # One Pong per message at most, however many Pings it held; if the writer has
                # not sent the last one yet, this one replaces it.
                self._pong_due, self._ping_seen = self._ping_seen, None
                self._outbox_ready.unpark()

    async def _receive_batch(self, message: bytes) -> None:
        """Process a batch's frames in order, yielding every CHECKPOINT_FRAMES frames (nothing
        else of this tunnel is read meanwhile, so the order holds). Stops once the session is
        closed; raises RemoteProtocolError at the first invalid frame (those before it count)."""
        conn = self._conn
        for index, item in enumerate(codec.split_batch(message), 1):
            conn.receive(item)
            for frame in conn.events():
                self._dispatch(frame)
            if self.closed_reason is not None:
                return
            if index % CHECKPOINT_FRAMES == 0:
                await trio.lowlevel.checkpoint()

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
            self._ping_seen = frame.nonce
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
            sending_since = self._sending_since
            stuck_at = math.inf if sending_since is None else sending_since + dead_after
            await trio.sleep_until(min(next_ping, self._last_heard + dead_after, stuck_at))
            now = trio.current_time()
            if now - self._last_heard >= dead_after:
                log.warning("%s: peer silent for %.1f s; closing the tunnel", self.name, dead_after)
                self.close(f"peer silent for {dead_after:g} s", CLOSE_GOING_AWAY)
                return
            sending_since = self._sending_since
            if sending_since is not None and now - sending_since >= dead_after:
                log.warning(
                    "%s: peer has not read anything for %.1f s; closing the tunnel",
                    self.name,
                    dead_after,
                )
                self.close(f"peer not reading for {dead_after:g} s", CLOSE_POLICY)
                return
            if now >= next_ping:
                self._send_frame(Ping(nonce=next(self._ping_nonces)))
                next_ping = now + interval
