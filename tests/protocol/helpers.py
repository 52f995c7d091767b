"""Test helpers for the sans-I/O tunnel protocol (in the style of h11's ``ConnectionPair``)."""

from __future__ import annotations

from typing import Any

from nfrx.protocol import (
    PROTOCOL_VERSION,
    Frame,
    Hello,
    Open,
    Role,
    TunnelConnection,
    Welcome,
)

DEFAULT_WINDOW = 65536


def make_hello(**overrides: Any) -> Hello:
    fields: dict[str, Any] = {
        "version": PROTOCOL_VERSION,
        "kind": "llm",
        "agent_id": "agent-1",
        "name": "gpu-box",
        "agent_version": "1.2.3",
        "models": ("llama3", "qwen"),
        "max_concurrency": 4,
        "window": DEFAULT_WINDOW,
    }
    fields.update(overrides)
    return Hello(**fields)


def make_welcome(**overrides: Any) -> Welcome:
    fields: dict[str, Any] = {
        "version": PROTOCOL_VERSION,
        "server_version": "9.9.9",
        "agent_id": "agent-1",
        "heartbeat_interval": 10.0,
        "dead_after": 30.0,
        "window": DEFAULT_WINDOW,
    }
    fields.update(overrides)
    return Welcome(**fields)


def make_open(stream_id: int, **overrides: Any) -> Open:
    fields: dict[str, Any] = {
        "stream_id": stream_id,
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": (("content-type", "application/json"),),
    }
    fields.update(overrides)
    return Open(**fields)


class ConnectionPair:
    """A server and an agent connection wired back to back: what one sends, the other receives."""

    def __init__(self) -> None:
        self.server = TunnelConnection(Role.SERVER)
        self.agent = TunnelConnection(Role.AGENT)

    def conn(self, role: Role) -> TunnelConnection:
        return self.server if role is Role.SERVER else self.agent

    def send(self, role: Role, frame: Frame) -> list[Frame]:
        """Send ``frame`` from ``role``, feed the message to the peer, return the peer's events."""
        message = self.conn(role).send(frame)
        return self.deliver(role.peer, message)

    def deliver(self, role: Role, message: str | bytes) -> list[Frame]:
        """Feed a raw WebSocket message to ``role``'s connection and return its events."""
        conn = self.conn(role)
        conn.receive(message)
        return conn.events()

    def handshake(
        self, *, agent_window: int = DEFAULT_WINDOW, server_window: int = DEFAULT_WINDOW
    ) -> None:
        """Hello (granting the server ``agent_window`` per stream), then Welcome (granting the
        agent ``server_window`` per stream)."""
        hello = make_hello(window=agent_window)
        assert self.send(Role.AGENT, hello) == [hello]
        welcome = make_welcome(window=server_window)
        assert self.send(Role.SERVER, welcome) == [welcome]

    def open(self, stream_id: int, **overrides: Any) -> Open:
        """Open ``stream_id`` from the server and check the agent sees it."""
        frame = make_open(stream_id, **overrides)
        assert self.send(Role.SERVER, frame) == [frame]
        return frame

    def assert_in_sync(self, *stream_ids: int) -> None:
        assert self.server.live_streams == self.agent.live_streams
        for stream_id in stream_ids:
            assert self.server.is_live(stream_id) == self.agent.is_live(stream_id), stream_id
