"""The server's end of a stream refuses an agent's answer no HTTP client may get (issue 13).

A refused head or body fails the stream locally with ``bad_agent_response`` and resets it, so
the agent's handler is cancelled (its backend request with it); the tunnel and every other
stream go on.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from nfrx.protocol import Headers, ResetCode
from nfrx.transport.errors import StreamReset
from nfrx.transport.streams import IncomingStream

from .helpers import Tunnel, open_tunnel


class Agent:
    """A handler that answers with a given head and body, then keeps working until cancelled."""

    def __init__(self, status: int, headers: Headers, body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.head_read = trio.Event()
        self.cancelled: list[str] = []

    async def __call__(self, stream: IncomingStream) -> None:
        await stream.receive_all(1_000_000)
        if stream.request.path == "/good":
            await stream.send_response(200, (("content-length", "2"),), data=b"ok", end=True)
            return
        try:
            await stream.send_response(self.status, self.headers)
            await self.head_read.wait()  # the body goes out only after the head was taken
            if self.body:
                await stream.send_data(self.body)
            await trio.sleep_forever()
        except trio.Cancelled:
            failure = stream.failure
            self.cancelled.append(failure.code if isinstance(failure, StreamReset) else "?")
            raise


async def assert_tunnel_still_works(tunnel: Tunnel) -> None:
    stream = tunnel.server.open_stream("POST", "/good", (), end=True)
    head = await stream.receive_response()
    assert head.status == 200
    assert await stream.receive_all(100) == b"ok"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (101, (("upgrade", "websocket"),)),
        (103, ()),
        (200, (("x-a", "b\r\nx-b: c"),)),
        (200, (("bad name", "v"),)),
        (200, (("content-length", "x"),)),
    ],
)
async def test_a_bad_head_fails_the_stream_and_cancels_the_agent(
    autojump_clock: trio.testing.MockClock, status: int, headers: Headers
) -> None:
    agent = Agent(status, headers)
    async with open_tunnel(agent) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        with pytest.raises(StreamReset) as info:
            await stream.receive_response()
        assert info.value.code == ResetCode.BAD_AGENT_RESPONSE
        assert not info.value.by_peer
        assert not stream.live
        await trio.testing.wait_all_tasks_blocked()
        assert agent.cancelled == [ResetCode.BAD_AGENT_RESPONSE]
        await assert_tunnel_still_works(tunnel)


async def test_a_body_longer_than_its_content_length_fails_after_the_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agent = Agent(200, (("content-length", "4"),), body=b"too long")
    async with open_tunnel(agent) as tunnel:
        stream = tunnel.server.open_stream("POST", "/x", (), end=True)
        head = await stream.receive_response()
        assert head.status == 200
        agent.head_read.set()
        with pytest.raises(StreamReset) as info:
            await stream.receive_some()
        assert info.value.code == ResetCode.BAD_AGENT_RESPONSE
        assert "longer than its content-length of 4" in info.value.message
        await trio.testing.wait_all_tasks_blocked()
        assert agent.cancelled == [ResetCode.BAD_AGENT_RESPONSE]
        await assert_tunnel_still_works(tunnel)


async def test_a_body_shorter_than_its_content_length_is_not_delivered_as_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def short(stream: IncomingStream) -> None:
        await stream.send_response(200, (("content-length", "10"),))
        await stream.send_data(b"abc")
        await trio.sleep(1)
        await stream.send_data(b"de", end=True)

    async with open_tunnel(short) as tunnel:
        stream = tunnel.server.open_stream("GET", "/x", (), end=True)
        await stream.receive_response()
        assert await stream.receive_some() == b"abc"
        with pytest.raises(StreamReset) as info:
            await stream.receive_some()
        assert info.value.code == ResetCode.BAD_AGENT_RESPONSE
        assert "5 bytes, shorter than its content-length of 10" in info.value.message


async def test_a_mismatch_that_arrives_with_the_head_fails_the_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Head and body in one batch: nothing has reached a client yet, so the caller gets the
    # failure instead of the head (and can answer 502 instead of a broken body).
    async def batched(stream: IncomingStream) -> None:
        await stream.send_response(200, (("content-length", "10"),), data=b"abc", end=True)

    async with open_tunnel(batched) as tunnel:
        stream = tunnel.server.open_stream("GET", "/x", (), end=True)
        with pytest.raises(StreamReset) as info:
            await stream.receive_response()
        assert info.value.code == ResetCode.BAD_AGENT_RESPONSE
        assert stream.buffered_body() is None


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_a_content_length_without_a_body_is_fine_where_no_body_follows(
    autojump_clock: trio.testing.MockClock, method: str, status: int
) -> None:
    async def bodyless(stream: IncomingStream) -> None:
        await stream.send_response(status, (("content-length", "123"),), end=True)

    async with open_tunnel(bodyless) as tunnel:
        stream = tunnel.server.open_stream(method, "/x", (), end=True)
        head = await stream.receive_response()
        assert head.status == status
        assert await stream.receive_some() == b""


async def test_a_body_matching_its_content_length_passes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def exact(stream: IncomingStream) -> None:
        await stream.send_response(200, (("Content-Length", " 6 "),))
        await stream.send_data(b"abc")
        await stream.send_data(b"def", end=True)

    async with open_tunnel(exact) as tunnel:
        stream = tunnel.server.open_stream("GET", "/x", (), end=True)
        await stream.receive_response()
        assert await stream.receive_all(100) == b"abcdef"
