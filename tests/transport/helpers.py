"""An in-memory tunnel: both sessions, handshake done, running in the caller's nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from nfrx.protocol import PROTOCOL_VERSION, Frame, Hello, Welcome
from nfrx.transport.handshake import agent_handshake, receive_hello
from nfrx.transport.messages import MemoryTransport, memory_transport_pair
from nfrx.transport.session import StreamHandler, TunnelSession, TunnelSettings


@attrs.define
class Tunnel:
    server: TunnelSession
    agent: TunnelSession
    server_transport: MemoryTransport
    agent_transport: MemoryTransport
    server_frames: list[Frame]


@asynccontextmanager
async def open_tunnel(
    handler: StreamHandler,
    *,
    settings: TunnelSettings | None = None,
    models: tuple[str, ...] = ("m",),
) -> AsyncIterator[Tunnel]:
    settings = settings or TunnelSettings()
    server_end, agent_end = memory_transport_pair()
    hello = Hello(
        version=PROTOCOL_VERSION,
        kind="llm",
        agent_id="a1",
        name="alpha",
        agent_version="test",
        models=models,
        window=settings.window,
    )
    welcome = Welcome(
        version=PROTOCOL_VERSION,
        server_version="test",
        agent_id="a1",
        heartbeat_interval=settings.heartbeat_interval,
        dead_after=settings.dead_after,
        window=settings.window,
    )

    async def server_side() -> TunnelSession:
        conn, _ = await receive_hello(server_end, timeout=5)
        await server_end.send_message(conn.send(welcome))
        return TunnelSession(server_end, conn, settings, on_frame=frames.append, name="server")

    frames: list[Frame] = []
    async with trio.open_nursery() as nursery:
        results: dict[str, TunnelSession] = {}

        async def run_server_handshake() -> None:
            results["server"] = await server_side()

        nursery.start_soon(run_server_handshake)
        conn, _ = await agent_handshake(agent_end, hello, timeout=5)
        agent = TunnelSession(agent_end, conn, settings, handler=handler, name="agent")
        await trio.testing.wait_all_tasks_blocked()
        server = results["server"]
        await nursery.start(server.run)
        await nursery.start(agent.run)
        try:
            yield Tunnel(server, agent, server_end, agent_end, frames)
        finally:
            nursery.cancel_scope.cancel()
