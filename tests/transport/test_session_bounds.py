"""What a peer can make a TunnelSession do is bounded: work per message, queued frames, and how
long a peer that does not read keeps its tunnel. The peer here is a raw transport end, so it can
send anything and read nothing."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from nfrx.protocol import (
    PROTOCOL_VERSION,
    Frame,
    Hello,
    Ping,
    Pong,
    Role,
    Status,
    TunnelConnection,
    Welcome,
    codec,
    encode,
)
from nfrx.transport.errors import TunnelClosed
from nfrx.transport.handshake import receive_hello
from nfrx.transport.messages import MemoryTransport, Message, memory_transport_pair
from nfrx.transport.session import (
    CHECKPOINT_FRAMES,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    TunnelSession,
    TunnelSettings,
)

SETTINGS = TunnelSettings(heartbeat_interval=1, dead_after=3)


@attrs.define
class RawPeer:
    """The agent's end as raw messages; the server's session runs against it."""

    session: TunnelSession
    transport: MemoryTransport
    frames: list[Frame]
    """What the server's session handed to its ``on_frame`` (Status, Goodbye, ...)."""

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.transport.send_message(encode(frame))

    async def send_batch(self, frames: Sequence[Frame]) -> None:
        await self.transport.send_message(codec.encode_batch([encode(f) for f in frames]))

    async def receive(self) -> list[Frame]:
        """The frames of the next message from the server."""
        message = await self.transport.get_message()
        if isinstance(message, bytes) and codec.is_batch(message):
            return [codec.decode(item) for item in codec.split_batch(message)]
        return [codec.decode(message)]


@asynccontextmanager
async def raw_peer(
    settings: TunnelSettings = SETTINGS,
    *,
    buffer: int = 16,
    server_transport: Callable[[MemoryTransport], object] | None = None,
    on_frame: Callable[[Frame], None] | None = None,
) -> AsyncIterator[RawPeer]:
    server_end, agent_end = memory_transport_pair(buffer)
    transport = server_end if server_transport is None else server_transport(server_end)
    agent = TunnelConnection(Role.AGENT)
    hello = Hello(
        version=PROTOCOL_VERSION,
        kind="llm",
        agent_id="raw",
        name="raw",
        agent_version="0",
        window=settings.window,
    )
    await agent_end.send_message(agent.send(hello))
    conn, _ = await receive_hello(server_end, timeout=5)
    welcome = Welcome(
        version=PROTOCOL_VERSION,
        server_version="test",
        agent_id="raw",
        heartbeat_interval=settings.heartbeat_interval,
        dead_after=settings.dead_after,
        window=settings.window,
    )
    await server_end.send_message(conn.send(welcome))
    agent.receive(await agent_end.get_message())
    frames: list[Frame] = []
    session = TunnelSession(
        transport,  # type: ignore[arg-type]
        conn,
        settings,
        on_frame=on_frame or frames.append,
        name="server",
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        yield RawPeer(session, agent_end, frames)
        nursery.cancel_scope.cancel()


async def test_a_burst_of_pings_gets_one_pong_with_the_newest_nonce(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with raw_peer() as peer:
        await peer.send_batch([Ping(nonce=i) for i in range(1, codec.MAX_BATCH_FRAMES + 1)])
        assert await peer.receive() == [Pong(nonce=codec.MAX_BATCH_FRAMES)]
        with trio.move_on_after(SETTINGS.heartbeat_interval / 2):
            extra = await peer.receive()
            pytest.fail(f"more than one answer: {extra}")


async def test_pings_the_peer_does_not_read_do_not_pile_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One ping per message, unread: the writer blocks on the full transport, and the newest
    nonce waits for it instead of a Pong per Ping."""
    async with raw_peer(buffer=2) as peer:
        for nonce in range(1, 201):
            await peer.send(Ping(nonce=nonce))
        await trio.testing.wait_all_tasks_blocked()
        assert not peer.session._outbox
        pongs: list[Frame] = []
        while not pongs or pongs[-1] != Pong(nonce=200):
            pongs.extend(await peer.receive())
        assert len(pongs) < 10
        assert not peer.session.closed


async def test_a_peer_that_does_not_read_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    """It keeps talking (so it is never silent) but reads nothing: once the writer has been
    stuck for ``dead_after``, the session ends."""
    async with raw_peer(buffer=1) as peer, trio.open_nursery() as nursery:

        async def chatter() -> None:
            for nonce in range(1000):
                await peer.send(Ping(nonce=nonce))
                await trio.sleep(0.5)

        nursery.start_soon(chatter)
        with trio.fail_after(SETTINGS.dead_after + 2 * SETTINGS.heartbeat_interval):
            await peer.session.finished.wait()
        nursery.cancel_scope.cancel()
    assert peer.session.closed_reason == "peer not reading for 3 s"
    assert peer.session._close_code == CLOSE_POLICY


async def test_control_frames_piling_up_close_the_tunnel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = attrs.evolve(SETTINGS, max_queued_control_bytes=2000)
    async with raw_peer(settings, buffer=1) as peer:
        streams = []
        with pytest.raises(TunnelClosed):  # noqa: PT012 -- the Open that tips it over raises
            for _ in range(100):
                streams.append(peer.session.open_stream("POST", "/v1/x", (("a", "b" * 20),)))
                await trio.testing.wait_all_tasks_blocked()
        assert 10 < len(streams) < 40
        assert (
            peer.session.closed_reason == "peer not reading (2000 bytes of control frames queued)"
        )
        for stream in streams:  # every request on it fails at once
            with pytest.raises(TunnelClosed):
                await stream.receive_response()


@attrs.define
class StuckTransport:
    """Its sends never finish, and cancelling them does nothing (hypercorn's sends to a peer that
    stopped reading are shielded) -- until the test releases them."""

    inner: MemoryTransport
    released: trio.Event = attrs.field(factory=trio.Event)

    async def send_message(self, message: Message) -> None:
        with trio.CancelScope(shield=True):
            await self.released.wait()

    async def get_message(self) -> Message:
        return await self.inner.get_message()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


async def test_closing_fails_streams_while_the_writer_is_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stuck: list[StuckTransport] = []

    def wrap(inner: MemoryTransport) -> StuckTransport:
        stuck.append(StuckTransport(inner))
        return stuck[0]

    async with raw_peer(server_transport=wrap) as peer:
        try:
            stream = peer.session.open_stream("GET", "/", (), end=True)
            await trio.testing.wait_all_tasks_blocked()
            peer.session.close("enough")
            with trio.fail_after(1), pytest.raises(TunnelClosed, match="enough"):
                await stream.receive_response()
        finally:
            stuck[0].released.set()  # else the session could not end


async def test_a_batch_lets_other_tasks_run_and_keeps_its_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks = 0
    seen: list[tuple[int, int]] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    def on_frame(frame: Frame) -> None:
        assert isinstance(frame, Status)
        seen.append((frame.max_concurrency, ticks))

    async with raw_peer(on_frame=on_frame) as peer, trio.open_nursery() as nursery:
        statuses = [
            Status(models=("m",), max_concurrency=i, status="ready")
            for i in range(codec.MAX_BATCH_FRAMES)
        ]
        nursery.start_soon(ticker)
        await peer.send_batch(statuses)
        while len(seen) < len(statuses):
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert [order for order, _ in seen] == list(range(codec.MAX_BATCH_FRAMES))
    # Frames dispatched with no other task running in between: at most two slices of
    # CHECKPOINT_FRAMES (trio may run the ticker before one slice and after the next).
    longest = max(len(list(run)) for _, run in itertools.groupby(tick for _, tick in seen))
    assert longest <= 2 * CHECKPOINT_FRAMES


async def test_frames_after_the_close_are_not_dispatched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[Frame] = []

    def close_on_first(frame: Frame) -> None:
        seen.append(frame)
        peer.session.close("the first status was enough")

    async with raw_peer(on_frame=close_on_first) as peer:
        statuses = [Status(models=(), max_concurrency=i, status="ready") for i in range(3)]
        await peer.send_batch(statuses)
        await peer.session.finished.wait()
    assert seen == statuses[:1]


async def test_a_batch_over_the_cap_closes_the_tunnel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ping = b'{"type":"ping","nonce":1}'
    item = b"\x00" + len(ping).to_bytes(4, "big") + ping
    async with raw_peer() as peer:
        await peer.transport.send_message(b"\x02" + item * (codec.MAX_BATCH_FRAMES + 1))
        await peer.session.finished.wait()
        assert peer.session.closed_reason == "protocol error: a batch of more than 1024 messages"
        assert peer.session._close_code == CLOSE_PROTOCOL_ERROR
