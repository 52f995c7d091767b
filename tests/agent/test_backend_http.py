"""The agent's backend leg: :func:`forward` through the lean HTTP/1.1 client, over an in-memory
tunnel, against raw backends on real loopback sockets (real clock; the caps are hang guards).

Each backend here is a few lines of h11 over a Trio socket, so a test controls exactly what the
backend writes in one ``send_all`` and sees exactly when its connection ends.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio
import trio.testing

from nfrx.agent.backend_http import Origin
from nfrx.agent.proxy import Outcome, ShardedTransport, backend_client, forward
from nfrx.protocol import Data, ResetCode
from nfrx.transport.errors import StreamReset
from nfrx.transport.streams import IncomingStream, OutgoingStream
from tests.transport.helpers import Tunnel, open_tunnel

HANG_GUARD = 10.0
SSE_HEAD = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


def event(i: int) -> bytes:
    return f'data: {{"token": "t{i}"}}\n\n'.encode()


@attrs.define(eq=False)
class Exchange:
    """One request as the backend received it, and its connection to answer on."""

    request: h11.Request
    body: bytes
    conn: h11.Connection
    stream: trio.SocketStream

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.request.headers}

    def encode(self, *events: h11.Event) -> bytes:
        return b"".join(self.conn.send(e) or b"" for e in events)

    async def answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        framing = ("content-length", str(len(body)))
        head = h11.Response(status_code=status, headers=[*headers, framing])
        await self.stream.send_all(self.encode(head, h11.Data(data=body), h11.EndOfMessage()))


Handler = Callable[[Exchange], Awaitable[None]]


@attrs.define(eq=False)
class Backend:
    base_url: str = ""
    connections: int = 0
    """Connections accepted so far."""
    closed: trio.Event = attrs.field(factory=trio.Event)
    """Set when the agent's side ended a connection (the backend read EOF)."""
    requests: list[Exchange] = attrs.field(factory=list)


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    while True:
        item = conn.next_event()
        if item is not h11.NEED_DATA:
            return item
        conn.receive_data(await stream.receive_some(65536))


@asynccontextmanager
async def raw_backend(handler: Handler) -> AsyncIterator[Backend]:
    """Serve ``handler`` on 127.0.0.1, one task per connection, keep-alive, for the block."""
    backend = Backend()

    async def serve(stream: trio.SocketStream) -> None:
        backend.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(conn, stream)
                if not isinstance(request, h11.Request):
                    backend.closed.set()
                    return
                parts = []
                while isinstance(item := await _next_event(conn, stream), h11.Data):
                    parts.append(item.data)
                exchange = Exchange(request, b"".join(parts), conn, stream)
                backend.requests.append(exchange)
                await handler(exchange)
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            backend.closed.set()
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        serve_tcp = functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        listeners = await nursery.start(serve_tcp)
        backend.base_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
        yield backend
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def agent_for(base_url: str, outcomes: list[Outcome]) -> AsyncIterator[Tunnel]:
    """An in-memory tunnel whose agent forwards every stream to ``base_url``."""
    async with backend_client(4, connect_timeout=HANG_GUARD) as client:

        async def handle(stream: IncomingStream) -> None:
            outcomes.append(await forward(client, base_url, stream, api_key="backend-key"))

        async with open_tunnel(handle) as tunnel:
            yield tunnel


def count_data_frames(tunnel: Tunnel) -> list[Data]:
    """The Data frames the server's session dispatches from now on (read from the wire)."""
    frames: list[Data] = []
    dispatch = tunnel.server._dispatch

    def spy(frame: Any) -> None:
        if isinstance(frame, Data):
            frames.append(frame)
        dispatch(frame)

    tunnel.server._dispatch = spy  # type: ignore[method-assign]
    return frames


async def read_body(stream: OutgoingStream) -> bytes:
    parts = []
    while chunk := await stream.receive_some():
        parts.append(chunk)
    return b"".join(parts)


async def read_answer(stream: OutgoingStream) -> bytes:
    await stream.receive_response()
    return await read_body(stream)


# -- batching: by what is waiting, never by waiting ---------------------------------------------


async def test_a_burst_the_backend_wrote_at_once_is_one_data_frame() -> None:
    count = 50

    async def burst(exchange: Exchange) -> None:
        events = [h11.Data(data=event(i)) for i in range(count)]  # 50 HTTP chunks ...
        head = h11.Response(status_code=200, headers=SSE_HEAD)
        await exchange.stream.send_all(exchange.encode(head, *events, h11.EndOfMessage()))

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with raw_backend(burst) as backend, agent_for(backend.base_url, outcomes) as tunnel:
            frames = count_data_frames(tunnel)
            stream = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
            head = await stream.receive_response()
            assert head.status == 200
            assert await read_body(stream) == b"".join(event(i) for i in range(count))
    # ... written in one send_all: one read, one frame (which also ends the stream).
    assert len(frames) == 1
    assert frames[0].end
    assert outcomes == [Outcome.ANSWERED]


async def test_a_paced_stream_relays_each_event_before_the_next_is_written() -> None:
    """Lockstep: the backend writes event i+1 only once event i reached the server's end of the
    tunnel; a relay that waited for more bytes before framing would hang here."""
    count = 5
    seen = [trio.Event() for _ in range(count)]

    async def paced(exchange: Exchange) -> None:
        head = h11.Response(status_code=200, headers=SSE_HEAD)
        await exchange.stream.send_all(exchange.encode(head))
        for i in range(count):
            await exchange.stream.send_all(exchange.encode(h11.Data(data=event(i))))
            await seen[i].wait()
        await exchange.stream.send_all(exchange.encode(h11.EndOfMessage()))

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with raw_backend(paced) as backend, agent_for(backend.base_url, outcomes) as tunnel:
            stream = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
            await stream.receive_response()
            for i in range(count):
                assert await stream.receive_some() == event(i)
                seen[i].set()
            assert await stream.receive_some() == b""
    assert outcomes == [Outcome.ANSWERED]


# -- the request ---------------------------------------------------------------------------------


async def test_a_whole_body_goes_with_content_length_and_the_connection_is_reused() -> None:
    async def echo(exchange: Exchange) -> None:
        await exchange.answer(200, b'{"ok":true}', [("content-type", "application/json")])

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with raw_backend(echo) as backend, agent_for(backend.base_url, outcomes) as tunnel:
            for n in range(3):
                stream = tunnel.server.open_stream(
                    "POST", "/chat/completions?x=1", (("content-type", "application/json"),)
                )
                await stream.send_data(b'{"n":%d}' % n, end=True)
                head = await stream.receive_response()
                assert head.status == 200
                assert dict(head.headers)["content-length"] == "11"
                assert await read_body(stream) == b'{"ok":true}'
    assert backend.connections == 1  # kept alive and reused
    first = backend.requests[0]
    assert first.request.target == b"/v1/chat/completions?x=1"
    assert first.body == b'{"n":0}'
    assert first.headers["content-length"] == "7"
    assert "transfer-encoding" not in first.headers
    assert first.headers["host"] == backend.base_url.split("/")[2]
    assert first.headers["authorization"] == "Bearer backend-key"
    assert first.headers["accept-encoding"] == "identity"
    assert outcomes == [Outcome.ANSWERED] * 3


async def test_a_streamed_upload_goes_chunked_as_it_arrives() -> None:
    received = trio.Event()

    async def upload(exchange: Exchange) -> None:
        received.set()
        await exchange.answer(201, b"stored", [("content-type", "text/plain")])

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with raw_backend(upload) as backend, agent_for(backend.base_url, outcomes) as tunnel:
            stream = tunnel.server.open_stream("POST", "/convert", ())
            await stream.send_data(b"part0,")
            # The agent starts its request before the body ended: it must stream it.
            await trio.testing.wait_all_tasks_blocked()
            for i in range(1, 10):
                await stream.send_data(b"part%d," % i)
            await stream.send_data(b"", end=True)
            head = await stream.receive_response()
            assert head.status == 201
            assert await read_body(stream) == b"stored"
    exchange = backend.requests[0]
    assert exchange.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in exchange.headers
    assert exchange.body == b"".join(b"part%d," % i for i in range(10))


async def test_an_early_answer_during_an_upload_is_relayed() -> None:
    """The backend refuses after the head, without reading the body, and closes (as servers do
    with 413): the agent relays its answer instead of a broken-pipe error."""

    async def serve(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request = await _next_event(conn, stream)
        assert isinstance(request, h11.Request)
        body = b'{"error":"too large"}'
        head = h11.Response(
            status_code=413,
            headers=[("content-length", str(len(body))), ("connection", "close")],
        )
        await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)))
        stream.socket.close()

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            serve_tcp = functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
            listeners = await nursery.start(serve_tcp)
            base_url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
            async with agent_for(base_url, outcomes) as tunnel:
                stream = tunnel.server.open_stream("POST", "/convert", ())

                async def upload() -> None:
                    try:
                        for _ in range(256):  # more than the socket buffers hold
                            await stream.send_data(b"x" * 65536)
                    except StreamReset:
                        pass

                nursery.start_soon(upload)
                head = await stream.receive_response()
                assert head.status == 413
                assert await read_body(stream) == b'{"error":"too large"}'
            nursery.cancel_scope.cancel()
    assert outcomes == [Outcome.ANSWERED]


# -- the connection's end ------------------------------------------------------------------------


async def test_a_reset_mid_stream_closes_the_backend_connection() -> None:
    """The server gives up (client gone): the backend sees its connection end -- how llama.cpp
    and Ollama learn to stop -- and the next request gets a new connection."""

    async def endless(exchange: Exchange) -> None:
        head = h11.Response(status_code=200, headers=SSE_HEAD)
        await exchange.stream.send_all(exchange.encode(head, h11.Data(data=event(0))))
        await trio.sleep_forever()  # cancelled when the backend sees the close (see below)

    async def answer_or_hang(exchange: Exchange) -> None:
        if len(backend.requests) == 1:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(endless, exchange)
                # The agent closing shows up as EOF on the same connection.
                assert await exchange.stream.receive_some(1) == b""
                backend.closed.set()
                nursery.cancel_scope.cancel()
            return
        await exchange.answer(200, b"again", [])

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with (
            raw_backend(answer_or_hang) as backend,
            agent_for(backend.base_url, outcomes) as tunnel,
        ):
            stream = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
            await stream.receive_response()
            assert await stream.receive_some() == event(0)
            stream.reset(ResetCode.CANCELLED, "client went away")
            await backend.closed.wait()
            again = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
            await again.receive_response()
            assert await read_body(again) == b"again"
    assert backend.connections == 2
    assert outcomes == [Outcome.ANSWERED]  # the cancelled exchange returned no outcome


@pytest.mark.parametrize(("close", "connections"), [(False, 1), (True, 2)])
async def test_after_a_chunked_answer_the_connection_is_reused_unless_closing(
    close: bool, connections: int
) -> None:
    async def stream(exchange: Exchange) -> None:
        head = h11.Response(
            status_code=200, headers=SSE_HEAD + ([("connection", "close")] if close else [])
        )
        events = [h11.Data(data=event(i)) for i in range(3)]
        await exchange.stream.send_all(exchange.encode(head, *events, h11.EndOfMessage()))

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with raw_backend(stream) as backend, agent_for(backend.base_url, outcomes) as tunnel:
            for _ in range(2):
                opened = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
                assert await read_answer(opened) == b"".join(event(i) for i in range(3))
                await trio.testing.wait_all_tasks_blocked()
    assert backend.connections == connections
    assert outcomes == [Outcome.ANSWERED] * 2


async def test_a_connection_the_backend_closed_while_idle_is_not_reused() -> None:
    async def answer_and_close(exchange: Exchange) -> None:
        await exchange.answer(200, b"ok", [])
        exchange.stream.socket.close()  # without "connection: close": a keep-alive timeout

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with (
            raw_backend(answer_and_close) as backend,
            agent_for(backend.base_url, outcomes) as tunnel,
        ):
            for _ in range(2):
                stream = tunnel.server.open_stream("GET", "/models", (), end=True)
                await stream.receive_response()
                assert await read_body(stream) == b"ok"
                await trio.testing.wait_all_tasks_blocked()
    assert backend.connections == 2
    assert outcomes == [Outcome.ANSWERED] * 2


# -- failures ------------------------------------------------------------------------------------


async def test_an_unreachable_backend_resets_with_upstream_unreachable_redacted() -> None:
    with trio.socket.socket() as reserved:  # bound, not listening: connections are refused
        await reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        base_url = f"http://user:secret@127.0.0.1:{port}/v1?key=k1"
        outcomes: list[Outcome] = []
        with trio.fail_after(HANG_GUARD):
            async with agent_for(base_url, outcomes) as tunnel:
                stream = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
                with pytest.raises(StreamReset) as info:
                    await stream.receive_response()
    assert info.value.code == ResetCode.UPSTREAM_UNREACHABLE
    assert info.value.message.startswith(
        f"cannot reach the backend at http://***@127.0.0.1:{port}/v1?key=***: "
    )
    assert "secret" not in info.value.message
    assert outcomes == [Outcome.UNREACHABLE]


@pytest.mark.parametrize(
    ("written", "detail"),
    [
        (b"", "closed the connection without a response"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "invalid response body"),
        (b"NOT HTTP AT ALL\r\n\r\n", "invalid response"),
        (CHUNKED + b"5\r\nhel", "closed the connection before the end of the body"),
        (CHUNKED + b"5\r\nhelloXX", "invalid response body: chunk data not followed by CRLF"),
    ],
    ids=["no-answer", "short-body", "garbage", "short-chunked", "bad-chunked"],
)
async def test_a_backend_that_breaks_the_exchange_resets_with_upstream_error(
    written: bytes, detail: str
) -> None:
    async def broken(exchange: Exchange) -> None:
        await exchange.stream.send_all(written)
        exchange.stream.socket.close()

    outcomes: list[Outcome] = []
    with trio.fail_after(HANG_GUARD):
        async with raw_backend(broken) as backend, agent_for(backend.base_url, outcomes) as tunnel:
            stream = tunnel.server.open_stream("POST", "/chat/completions", (), end=True)
            with pytest.raises(StreamReset) as info:
                await read_answer(stream)
    assert info.value.code == ResetCode.UPSTREAM_ERROR
    assert info.value.message.startswith(f"the backend at {backend.base_url} failed: ")
    assert detail in info.value.message
    assert outcomes == [Outcome.BROKEN]


# -- addresses and the TLS pool ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host_header", "target"),
    [
        ("http://127.0.0.1:8080/v1", "127.0.0.1:8080", b"/v1/chat?a=1"),
        ("http://backend/v1/", "backend", b"/v1/chat?a=1"),
        ("http://[::1]:81", "[::1]:81", b"/chat?a=1"),
        ("http://user:pw@host:80/api", "host", b"/api/chat?a=1"),
    ],
)
def test_origin_of_a_plain_http_url(url: str, host_header: str, target: bytes) -> None:
    origin = Origin.parse(url)
    assert origin is not None
    assert origin.host_header == host_header
    assert origin.target("/chat?a=1") == target


def test_targets_are_percent_encoded_like_httpx_did() -> None:
    origin = Origin.parse("http://h/v1")
    assert origin is not None
    raw = "/tasks/a b?q=é|%41"
    assert origin.target(raw) == httpx.Request("GET", "http://h/v1" + raw).url.raw_path


def test_https_and_other_schemes_stay_with_httpx() -> None:
    assert Origin.parse("https://backend/v1") is None
    assert Origin.parse("unix:///run/backend.sock") is None


def test_a_pool_for_2000_slots_builds_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(create(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    pool = ShardedTransport(2000 * 2 + 2)
    assert len(pool._shards) > 100
    assert len(built) == 1
    assert {id(shard._pool._ssl_context) for shard in pool._shards} == {id(built[0])}
