"""TunnelSession over in-memory transports, on the autojump clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from nfrx.protocol import ResetCode, Status
from nfrx.transport.errors import StreamReset, TunnelClosed
from nfrx.transport.session import TunnelSettings
from nfrx.transport.streams import IncomingStream

from .helpers import open_tunnel

SMALL = TunnelSettings(window=1024, max_frame_bytes=256, heartbeat_interval=1, dead_after=3)


async def echo(stream: IncomingStream) -> None:
    body = await stream.receive_all(10_000_000)
    await stream.send_response(200, (("content-type", "text/plain"),))
    await stream.send_data(b"echo:" + body, end=True)


async def test_exchange_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    async with open_tunnel(echo, settings=SMALL) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (("a", "b"),))
        await stream.send_data(b"hello " * 1000, end=True)  # many windows' worth
        head = await stream.receive_response()
        assert head.status == 200
        assert head.headers == (("content-type", "text/plain"),)
        body = await stream.receive_all(10_000_000)
        assert body == b"echo:" + b"hello " * 1000
        assert not stream.live
        assert tunnel.server.live_streams == 0


async def test_open_without_body(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(stream: IncomingStream) -> None:
        assert await stream.receive_some() == b""
        await stream.send_response(204, (), end=True)

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("GET", "/models", (), end=True)
        head = await stream.receive_response()
        assert head.status == 204
        assert await stream.receive_some() == b""


async def test_slow_reader_does_not_stall_other_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    produced: dict[str, int] = {"big": 0}

    async def handler(stream: IncomingStream) -> None:
        await stream.send_response(200, ())
        if stream.request.path == "/big":
            for _ in range(1000):  # 256 KiB, far beyond the 1 KiB window
                await stream.send_data(b"x" * 256)
                produced["big"] += 256
            await stream.end()
        else:
            for i in range(50):
                await stream.send_data(f"{i},".encode())
            await stream.end()

    async with open_tunnel(handler, settings=SMALL) as tunnel:
        big = tunnel.server.open_stream("GET", "/big", (), end=True)
        await big.receive_response()
        # Nobody reads /big: its producer must stop at about one window...
        small = tunnel.server.open_stream("GET", "/small", (), end=True)
        await small.receive_response()
        body = await small.receive_all(100_000)
        # ...while the other stream on the same tunnel completes.
        assert body == b"".join(f"{i},".encode() for i in range(50))
        await trio.testing.wait_all_tasks_blocked()
        assert produced["big"] <= SMALL.window
        # Reading the slow stream releases its producer.
        assert len(await big.receive_all(1_000_000)) == 256 * 1000


async def test_what_arrived_since_the_last_read_comes_out_as_one_piece(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A burst of Data frames is read in one call, in order; a frame that arrives alone is
    read as soon as it is there (nothing waits for more)."""
    burst_sent = trio.Event()
    lone_read = trio.Event()

    async def handler(stream: IncomingStream) -> None:
        await stream.send_response(200, ())
        for i in range(20):
            await stream.send_data(f"event {i}\n\n".encode())
        burst_sent.set()
        await lone_read.wait()
        await stream.send_data(b"alone\n\n", end=True)

    async with open_tunnel(handler, settings=SMALL) as tunnel:
        stream = tunnel.server.open_stream("GET", "/events", (), end=True)
        await stream.receive_response()
        await burst_sent.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert await stream.receive_some() == b"".join(f"event {i}\n\n".encode() for i in range(20))
        # The handler sends its last frame only after this read started: it is not held back.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_when_blocked, lone_read)
            assert await stream.receive_some() == b"alone\n\n"
        assert await stream.receive_some() == b""


async def _set_when_blocked(event: trio.Event) -> None:
    await trio.testing.wait_all_tasks_blocked()
    event.set()


async def test_server_reset_cancels_agent_handler(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def handler(stream: IncomingStream) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("POST", "/slow", (), end=True)
        await started.wait()
        stream.reset(ResetCode.CANCELLED, "client went away")
        with trio.fail_after(1):
            await cancelled.wait()
        with pytest.raises(StreamReset):
            await stream.receive_response()
        await trio.testing.wait_all_tasks_blocked()
        assert tunnel.agent.live_streams == 0
        assert tunnel.server.live_streams == 0


async def test_agent_reset_reaches_server(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(stream: IncomingStream) -> None:
        stream.reset(ResetCode.UPSTREAM_UNREACHABLE, "connect refused")

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        with pytest.raises(StreamReset) as info:
            await stream.receive_response()
        assert info.value.code == ResetCode.UPSTREAM_UNREACHABLE
        assert info.value.by_peer
        assert info.value.message == "connect refused"


async def test_reset_mid_body_keeps_buffered_data_then_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(stream: IncomingStream) -> None:
        await stream.send_response(200, ())
        await stream.send_data(b"partial")
        stream.reset(ResetCode.UPSTREAM_ERROR, "backend died")

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        await stream.receive_response()
        assert await stream.receive_some() == b"partial"
        with pytest.raises(StreamReset) as info:
            await stream.receive_some()
        assert info.value.code == ResetCode.UPSTREAM_ERROR


async def test_agent_deadline_resets_stream(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(stream: IncomingStream) -> None:
        await trio.sleep_forever()

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), timeout=2.0, end=True)
        start = trio.current_time()
        with pytest.raises(StreamReset) as info:
            await stream.receive_response()
        assert info.value.code == ResetCode.TIMEOUT
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)


async def test_handler_crash_becomes_internal_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(stream: IncomingStream) -> None:
        raise RuntimeError("boom")

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        with pytest.raises(StreamReset) as info:
            await stream.receive_response()
        assert info.value.code == ResetCode.INTERNAL
        # The tunnel survives a failed stream.
        assert not tunnel.server.closed


async def test_silent_peer_is_declared_dead(autojump_clock: trio.testing.MockClock) -> None:
    release = trio.Event()

    async def handler(stream: IncomingStream) -> None:
        await release.wait()

    async with open_tunnel(handler, settings=SMALL) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        tunnel.agent_transport.freeze()
        with pytest.raises(TunnelClosed):
            await stream.receive_response()
        waited = trio.current_time() - start
        assert SMALL.dead_after - 0.1 <= waited <= SMALL.dead_after + SMALL.heartbeat_interval
        assert tunnel.server.closed_reason is not None
        assert "silent" in tunnel.server.closed_reason


async def test_peer_close_fails_streams_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(stream: IncomingStream) -> None:
        await trio.sleep_forever()

    async with open_tunnel(handler) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        tunnel.agent.close("agent exiting")
        with pytest.raises(TunnelClosed):
            await stream.receive_response()
        assert trio.current_time() - start < 0.01
        with pytest.raises(TunnelClosed):
            tunnel.server.open_stream("POST", "/x", (), end=True)


async def test_protocol_error_closes_tunnel(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(stream: IncomingStream) -> None:
        await trio.sleep_forever()

    async with open_tunnel(handler) as tunnel:
        # Data for a stream the server never opened: the agent is misbehaving.
        await tunnel.agent_transport.send_message(b"\x01\x00\x00\x00\x00\x63junk")
        with trio.fail_after(1):
            await tunnel.server.finished.wait()
        assert tunnel.server.closed_reason is not None
        assert "never opened" in tunnel.server.closed_reason


async def test_status_frames_reach_server(autojump_clock: trio.testing.MockClock) -> None:
    async with open_tunnel(echo) as tunnel:
        tunnel.agent.send_control(Status(models=("a", "b"), max_concurrency=3, status="ready"))
        await trio.testing.wait_all_tasks_blocked()
        assert tunnel.server_frames == [
            Status(models=("a", "b"), max_concurrency=3, status="ready")
        ]


async def test_draining_agent_refuses_new_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with open_tunnel(echo) as tunnel:
        tunnel.agent.accepting = False
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        with pytest.raises(StreamReset) as info:
            await stream.receive_response()
        assert info.value.code == ResetCode.DRAINING


async def test_queued_frames_go_out_as_one_batch(autojump_clock: trio.testing.MockClock) -> None:
    """The head and body of a small exchange travel as one message each way."""
    from nfrx.protocol import codec

    sent: list[bytes] = []
    frames_received = 0

    async def handler(stream: IncomingStream) -> None:
        body = await stream.receive_all(1000)
        await stream.send_response(200, (), data=b"re:" + body, end=True)

    async with open_tunnel(handler) as tunnel:
        await trio.testing.wait_all_tasks_blocked()
        for session in (tunnel.server, tunnel.agent):
            # The reader hands a batch to _receive_batch, which feeds its frames to the
            # connection one by one; anything else goes to the connection directly.
            original_batch = session._receive_batch
            original_receive = session._conn.receive

            async def batch_spy(
                message: bytes, original: Callable[[bytes], Awaitable[None]] = original_batch
            ) -> None:
                sent.append(message)
                await original(message)

            def receive_spy(
                message: str | bytes, original: Callable[[str | bytes], None] = original_receive
            ) -> None:
                nonlocal frames_received
                frames_received += 1
                original(message)

            session._receive_batch = batch_spy  # type: ignore[method-assign]
            session._conn.receive = receive_spy  # type: ignore[method-assign]
        await trio.testing.wait_all_tasks_blocked()
        stream = tunnel.server.open_stream("POST", "/x", ())
        await stream.send_data(b"hi", end=True)
        head = await stream.receive_response()
        assert head.status == 200
        assert not head.end
        assert await stream.receive_all(1000) == b"re:hi"
        assert await stream.receive_some() == b""
        assert tunnel.server.live_streams == 0
    assert len(sent) == 2
    assert all(codec.is_batch(message) for message in sent)
    assert [len(codec.split_batch(m)) for m in sent] == [2, 2]
    assert frames_received == 4  # nothing but the two batches
