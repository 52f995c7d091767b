"""The tunnel connection: a pure state machine (no I/O, no clock, no awaiting).

Use (the wsproto/h11 shape)::

    conn = TunnelConnection(Role.SERVER)
    conn.receive(message)            # a message from the peer; may raise RemoteProtocolError
    for frame in conn.events(): ...  # the frames that message delivered
    message = conn.send(frame)       # validate + account a frame, get the message to write

The connection enforces the handshake, the stream state table of :mod:`nfrx.protocol.state`,
stream ownership (only the server opens streams, ids strictly increase, a frame for a stream that
was never opened is a protocol error) and per-stream credit flow control. Frames the peer may
legitimately still send for a stream that this side already finished or reset (they crossed on the
wire) are dropped silently and not reported as events.
"""

from __future__ import annotations

import attrs

from nfrx.protocol import codec
from nfrx.protocol.errors import LocalProtocolError, RemoteProtocolError
from nfrx.protocol.frames import (
    MAX_WINDOW,
    Credit,
    Data,
    Drain,
    Frame,
    Goodbye,
    Hello,
    Open,
    Reset,
    Response,
    Welcome,
)
from nfrx.protocol.state import (
    CONNECTION_TRANSITIONS,
    OPEN_FRAMES,
    STREAM_TRANSITIONS,
    ConnState,
    Half,
    Role,
)


@attrs.define
class _Stream:
    request: Half
    response: Half
    credit: int
    """Body bytes this side may still send."""
    allowance: int
    """Body bytes the peer may still send this side."""

    def half(self, sender: Role) -> Half:
        return self.request if sender is Role.SERVER else self.response

    def set_half(self, sender: Role, value: Half) -> None:
        if sender is Role.SERVER:
            self.request = value
        else:
            self.response = value

    @property
    def finished(self) -> bool:
        return self.request is Half.CLOSED and self.response is Half.CLOSED


class TunnelConnection:
    """One side of a tunnel. Not thread-safe; owned by one transport session."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = ConnState.AWAIT_HELLO
        self._grant: dict[Role, int] = {}
        """Per-stream window each side granted in the handshake (agent: Hello, server: Welcome)."""
        self._streams: dict[int, _Stream] = {}
        self._highest_stream_id = 0
        self._events: list[Frame] = []
        self._closing: set[Role] = set()
        """Sides that sent Goodbye (or Drain): the server opens no new stream after either."""

    # -- public surface ----------------------------------------------------------------------

    def send(self, frame: Frame) -> str | bytes:
        """Account for ``frame`` going out and return the WebSocket message to write.

        Raises :class:`LocalProtocolError` if the protocol forbids sending it now.
        """
        try:
            codec.check_ranges(frame)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self._process(self.role, frame)
        return codec.encode(frame)

    def send_data(self, stream_id: int, payload: bytes, *, end: bool = False) -> bytes:
        """Like ``send(Data(...))`` without building the frame object (the body hot path)."""
        self._process_data(self.role, stream_id, len(payload), end)
        return codec.encode_data(stream_id, payload, end=end)

    def receive(self, message: str | bytes) -> None:
        """Feed one WebSocket message from the peer; its frame (if any) becomes an event, or,
        for a batch, the frames it holds, in order.

        Raises :class:`RemoteProtocolError` (and nothing else) if the message is invalid (the
        frames of a batch before the invalid one have been processed).
        """
        if not isinstance(message, str) and codec.is_batch(message):
            for item in codec.split_batch(bytes(message)):
                self._receive_one(item)
        else:
            self._receive_one(message)

    def _receive_one(self, message: str | bytes) -> None:
        frame = codec.decode(message)
        try:
            deliver = self._process(self.role.peer, frame)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        if deliver:
            self._events.append(frame)

    def events(self) -> list[Frame]:
        """Return (and forget) the frames received since the last call, in arrival order."""
        events, self._events = self._events, []
        return events

    def credit(self, stream_id: int) -> int:
        """Body bytes this side may send on ``stream_id`` now (0 for an unknown stream)."""
        stream = self._streams.get(stream_id)
        return stream.credit if stream is not None else 0

    def is_live(self, stream_id: int) -> bool:
        """True while ``stream_id`` is open in at least one direction and not reset."""
        return stream_id in self._streams

    @property
    def live_streams(self) -> int:
        return len(self._streams)

    @property
    def peer_closing(self) -> bool:
        """The peer sent Goodbye (or, from the server, Drain)."""
        return self.role.peer in self._closing

    # -- the rules ---------------------------------------------------------------------------

    def _process(self, sender: Role, frame: Frame) -> bool:
        name = frame.type
        if self.state is not ConnState.OPEN:
            after = CONNECTION_TRANSITIONS.get((sender, self.state, name))
            if after is None:
                raise LocalProtocolError(
                    f"{sender.value} may not send {name!r} while the connection is "
                    f"{self.state.value}"
                )
            if isinstance(frame, Hello | Welcome):
                self._grant[sender] = frame.window
            self.state = after
            return True
        if (sender, name) not in OPEN_FRAMES:
            raise LocalProtocolError(f"{sender.value} may not send {name!r}")
        if isinstance(frame, Data):
            return self._process_data(sender, frame.stream_id, len(frame.payload), frame.end)
        if isinstance(frame, Open):
            self._open(sender, frame)
            return True
        if isinstance(frame, Response | Credit | Reset):
            return self._stream_frame(sender, frame)
        if isinstance(frame, Goodbye | Drain):
            self._closing.add(sender)
        return True

    def _open(self, sender: Role, frame: Open) -> None:
        # The server knows about both sides' goodbyes; the agent may still receive an Open that
        # crossed its own Goodbye on the wire (it resets it as draining), but not one sent after
        # the server's own Goodbye or Drain.
        closing = self._closing if sender is self.role else self._closing & {sender}
        if closing:
            raise LocalProtocolError(f"stream {frame.stream_id} opened after goodbye/drain")
        if frame.stream_id <= self._highest_stream_id:
            raise LocalProtocolError(
                f"stream id {frame.stream_id} not above the last one ({self._highest_stream_id})"
            )
        self._highest_stream_id = frame.stream_id
        server_sends = sender is self.role
        stream = _Stream(
            request=Half.IDLE,
            response=Half.IDLE,
            credit=self._grant[Role.AGENT] if server_sends else self._grant[Role.SERVER],
            allowance=self._grant[Role.SERVER] if server_sends else self._grant[Role.AGENT],
        )
        self._streams[frame.stream_id] = stream
        self._transition(sender, stream, frame.stream_id, "open_end" if frame.end else "open")

    def _lookup(self, stream_id: int) -> _Stream | None:
        """The live stream, or None for one that ended; an id never opened is an error."""
        stream = self._streams.get(stream_id)
        if stream is None and stream_id > self._highest_stream_id:
            raise LocalProtocolError(f"frame for stream {stream_id}, which was never opened")
        return stream

    def _process_data(self, sender: Role, stream_id: int, size: int, end: bool) -> bool:
        if self.state is not ConnState.OPEN:
            raise LocalProtocolError(f"data while the connection is {self.state.value}")
        stream = self._lookup(stream_id)
        if stream is None:
            if sender is self.role:
                raise LocalProtocolError(f"data for stream {stream_id}, which has ended")
            return False
        after = self._next_half(sender, stream, stream_id, "data_end" if end else "data")
        if sender is self.role:
            if size > stream.credit:
                raise LocalProtocolError(
                    f"{size} bytes on stream {stream_id} exceed the credit of {stream.credit}"
                )
            stream.credit -= size
        else:
            if size > stream.allowance:
                raise LocalProtocolError(
                    f"{size} bytes on stream {stream_id} exceed the window of {stream.allowance}"
                )
            stream.allowance -= size
        self._set(sender, stream, stream_id, after)
        return True

    def _stream_frame(self, sender: Role, frame: Response | Credit | Reset) -> bool:
        stream = self._lookup(frame.stream_id)
        if stream is None:
            if sender is self.role and isinstance(frame, Response):
                raise LocalProtocolError(f"response for stream {frame.stream_id}, which has ended")
            return False  # a credit or reset crossing the stream's end on the wire
        if isinstance(frame, Reset):
            del self._streams[frame.stream_id]
        elif isinstance(frame, Credit):
            if sender is self.role:
                if stream.allowance + frame.increment > MAX_WINDOW:
                    raise LocalProtocolError(f"window of stream {frame.stream_id} overflows")
                stream.allowance += frame.increment
            else:
                if stream.credit + frame.increment > MAX_WINDOW:
                    raise LocalProtocolError(f"credit of stream {frame.stream_id} overflows")
                stream.credit += frame.increment
        else:
            self._transition(
                sender, stream, frame.stream_id, "response_end" if frame.end else "response"
            )
        return True

    def _next_half(self, sender: Role, stream: _Stream, stream_id: int, event: str) -> Half:
        before = stream.half(sender)
        after = STREAM_TRANSITIONS.get((sender, before, event))
        if after is None:
            raise LocalProtocolError(
                f"{sender.value} may not send {event!r} on stream {stream_id} "
                f"while its half is {before.value}"
            )
        return after

    def _set(self, sender: Role, stream: _Stream, stream_id: int, half: Half) -> None:
        stream.set_half(sender, half)
        if stream.finished:
            del self._streams[stream_id]

    def _transition(self, sender: Role, stream: _Stream, stream_id: int, event: str) -> None:
        self._set(sender, stream, stream_id, self._next_half(sender, stream, stream_id, event))
