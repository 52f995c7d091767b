"""Token streams end to end: batched by what is waiting, never by waiting.

Real ``nfrx serve`` and ``nfrx llm`` processes; the backend is a few lines of h11 over a Trio
socket in the test's loop, so the test decides exactly what the backend writes in one
``send_all`` and when. The client is httpx: ``aiter_raw`` yields one piece per HTTP chunk the
server wrote (a chunk read in parts yields more pieces, never fewer), so counting pieces counts
the server's writes whatever the client's read timing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import httpx
import pytest
import trio

from tests.e2e.harness import run_agent, run_server

pytestmark = pytest.mark.e2e

HANG_GUARD = 30.0
MODEL = "stream-model"
SSE_HEAD = [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]


def event(i: int) -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": f"t{i} "}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


Stream = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]
"""What the backend does after the head: called with ``send_all`` of its socket, it writes the
chunk-encoded body (see :func:`chunked`)."""


@asynccontextmanager
async def sse_backend(stream: Stream) -> AsyncIterator[str]:
    """A backend serving ``MODEL``; each chat request is answered by ``stream``. Yields its
    base URL."""

    async def serve(sock: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with trio.move_on_after(HANG_GUARD):
            while True:
                request: Any = None
                while not isinstance(item := conn.next_event(), h11.EndOfMessage):
                    if item is h11.NEED_DATA:
                        conn.receive_data(await sock.receive_some(65536))
                    elif isinstance(item, h11.Request):
                        request = item
                    elif isinstance(item, h11.ConnectionClosed):
                        return
                if request.target != b"/v1/models":
                    # The body is written raw (h11 does not see it): one response per connection.
                    await sock.send_all(conn.send(h11.Response(status_code=200, headers=SSE_HEAD)))
                    await stream(sock.send_all)
                    break
                body = json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()
                head = h11.Response(status_code=200, headers=[("content-length", str(len(body)))])
                answer = [head, h11.Data(data=body), h11.EndOfMessage()]
                await sock.send_all(b"".join(conn.send(e) or b"" for e in answer))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        await trio.aclose_forcefully(sock)

    async with trio.open_nursery() as nursery:
        serve_tcp = functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        listeners = await nursery.start(serve_tcp)
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"
        nursery.cancel_scope.cancel()


def chunked(*pieces: bytes) -> bytes:
    """``pieces`` as HTTP chunks, one each (what a backend flushing per event writes)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


END = b"0\r\n\r\n"


async def test_a_burst_written_at_once_reaches_the_client_in_fewer_writes() -> None:
    count = 50
    first_seen = trio.Event()

    async def burst(write: Callable[[bytes], Awaitable[None]]) -> None:
        await write(chunked(event(0)))
        await first_seen.wait()  # the response is streaming: the burst is not part of its head
        await write(chunked(*(event(i) for i in range(1, count + 1))) + END)

    with trio.fail_after(HANG_GUARD):
        async with (
            sse_backend(burst) as backend_url,
            run_server() as server,
            run_agent(server, backend_url),
            httpx.AsyncClient() as http,
            http.stream(
                "POST",
                server.api_base + "/chat/completions",
                headers=server.headers(),
                json={"model": MODEL, "stream": True, "messages": []},
            ) as response,
        ):
            assert response.status_code == 200
            pieces = []
            async for piece in response.aiter_raw():
                pieces.append(piece)
                first_seen.set()
    body = b"".join(pieces)
    assert body == b"".join(event(i) for i in range(count + 1))
    assert pieces[0] == event(0)
    # Fifty events, each its own HTTP chunk from the backend, all written at once: the relay
    # passed them on in a few writes, not fifty.
    assert len(pieces) - 1 < count // 5


async def test_a_paced_stream_leaves_event_by_event_in_lockstep() -> None:
    """The backend writes each event only after the client received the previous one: a relay
    that held an event back to wait for more would never finish (the cap turns that into a
    failure)."""
    count = 5
    received = [trio.Event() for _ in range(count)]

    async def paced(write: Callable[[bytes], Awaitable[None]]) -> None:
        for i in range(count):
            await write(chunked(event(i)))
            await received[i].wait()
        await write(END)

    with trio.fail_after(HANG_GUARD):
        async with (
            sse_backend(paced) as backend_url,
            run_server() as server,
            run_agent(server, backend_url),
            httpx.AsyncClient() as http,
            http.stream(
                "POST",
                server.api_base + "/chat/completions",
                headers=server.headers(),
                json={"model": MODEL, "stream": True, "messages": []},
            ) as response,
        ):
            body = b""
            async for piece in response.aiter_raw():
                body += piece
                for i in range(count):
                    if event(i) in body:
                        received[i].set()
    assert body == b"".join(event(i) for i in range(count))
