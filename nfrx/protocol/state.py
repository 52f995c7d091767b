"""The tunnel's state machines, as tables (the h11 ``_state.py`` rule: every transition lives here).

A connection goes through a handshake; each stream carries one HTTP exchange made of two halves,
the *request* half (sent by the server) and the *response* half (sent by the agent). Each half moves
``IDLE -> OPEN -> CLOSED``; a :class:`~nfrx.protocol.frames.Reset` from either side ends both halves
at once. Which half a frame drives follows from who sent it, so one table serves both roles and
both directions -- the table does not know whether it runs on the server or on the agent.

Stream events are the frame type plus ``_end`` when the frame's ``end`` flag is set.
"""

from __future__ import annotations

import enum
from typing import Final


class Role(enum.Enum):
    SERVER = "server"
    """Opens streams (sends requests); accepts the handshake."""
    AGENT = "agent"
    """Answers streams; starts the handshake."""

    @property
    def peer(self) -> Role:
        return Role.AGENT if self is Role.SERVER else Role.SERVER


class ConnState(enum.Enum):
    AWAIT_HELLO = "await_hello"
    """Nothing exchanged yet."""
    HELLO_SENT = "hello_sent"
    """The agent said hello; the server has not answered."""
    OPEN = "open"
    """Handshake done: streams, pings and status frames flow."""
    CLOSED = "closed"
    """Refused, or the handshake never completed; nothing more may be sent or received."""


CONNECTION_TRANSITIONS: Final[dict[tuple[Role, ConnState, str], ConnState]] = {
    # (who sends, state before, frame type) -> state after
    (Role.AGENT, ConnState.AWAIT_HELLO, "hello"): ConnState.HELLO_SENT,
    (Role.SERVER, ConnState.HELLO_SENT, "welcome"): ConnState.OPEN,
    (Role.SERVER, ConnState.HELLO_SENT, "refuse"): ConnState.CLOSED,
}
"""Handshake transitions. Once OPEN, a frame is allowed when its (sender, type) is in
:data:`OPEN_FRAMES`; the state does not change further."""

OPEN_FRAMES: Final[frozenset[tuple[Role, str]]] = frozenset(
    {
        (Role.SERVER, "open"),
        (Role.SERVER, "data"),
        (Role.SERVER, "credit"),
        (Role.SERVER, "reset"),
        (Role.SERVER, "ping"),
        (Role.SERVER, "pong"),
        (Role.SERVER, "drain"),
        (Role.SERVER, "members"),
        (Role.SERVER, "goodbye"),
        (Role.AGENT, "response"),
        (Role.AGENT, "data"),
        (Role.AGENT, "credit"),
        (Role.AGENT, "reset"),
        (Role.AGENT, "ping"),
        (Role.AGENT, "pong"),
        (Role.AGENT, "status"),
        (Role.AGENT, "load"),
        (Role.AGENT, "goodbye"),
    }
)


class Half(enum.Enum):
    IDLE = "idle"
    """No head sent yet on this half."""
    OPEN = "open"
    """Head sent; body frames may follow."""
    CLOSED = "closed"
    """The last body frame was sent (or the head carried ``end``)."""


HALF_OF_SENDER: Final[dict[Role, str]] = {Role.SERVER: "request", Role.AGENT: "response"}
"""The server's frames drive the request half, the agent's the response half."""

STREAM_TRANSITIONS: Final[dict[tuple[Role, Half, str], Half]] = {
    # (who sends, that sender's half before, stream event) -> half after
    (Role.SERVER, Half.IDLE, "open"): Half.OPEN,
    (Role.SERVER, Half.IDLE, "open_end"): Half.CLOSED,
    (Role.SERVER, Half.OPEN, "data"): Half.OPEN,
    (Role.SERVER, Half.OPEN, "data_end"): Half.CLOSED,
    (Role.AGENT, Half.IDLE, "response"): Half.OPEN,
    (Role.AGENT, Half.IDLE, "response_end"): Half.CLOSED,
    (Role.AGENT, Half.OPEN, "data"): Half.OPEN,
    (Role.AGENT, Half.OPEN, "data_end"): Half.CLOSED,
}
"""Body transitions. ``credit`` is valid on any live stream (it never changes a half) and
``reset`` ends the stream from any state; both are handled by the connection, not this table."""
