"""A tiny OpenAI-compatible backend for the benchmarks that nginx ``return`` cannot play.

``python bench/paced_backend.py PORT`` serves on 127.0.0.1:PORT until SIGTERM:

- ``GET /v1/models``: the models ``paced`` and ``bulk``.
- ``POST /v1/chat/completions`` with ``"model": "paced"``: an event stream of 22 chat chunks
  (a role chunk at once, 20 content chunks ``GAP`` s apart, a stop chunk) and ``data: [DONE]``.
- ``... "model": "bulk"``: ``BULK_BYTES`` of SSE comments as fast as the peer takes them, to
  test that a slow reader slows the producer instead of growing a buffer in the relay.
- ``... "model": "long"``: ``LONG_EVENTS`` one-token chat chunks and ``data: [DONE]``, each
  written (one HTTP chunk, one ``send_all``: flushed) on its own, with no pause -- a token
  stream at wire speed, which nginx cannot play from a static ``return``.
- ``GET /bench/closes``: ``{request_id: monotonic_time}`` for every response whose peer went
  away before it was complete (``X-Request-Id`` names the request). ``time.monotonic`` is
  CLOCK_MONOTONIC, which every process on the machine shares, so the benchmark can subtract its
  own timestamps from these.

One Trio task per connection; a second task per streamed response watches the socket for the
peer's FIN so a close is seen at once, not only at the next write.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time

import h11
import trio

GAP = 0.05
EVENTS = 20
BULK_BYTES = 256 * 1024 * 1024
LONG_EVENTS = 500
MODELS = ("paced", "bulk", "long")

closes: dict[str, float] = {}


def _chunk(delta: str, finish: str = "null") -> bytes:
    return (
        'data: {"id":"chatcmpl-paced","object":"chat.completion.chunk","created":1700000000,'
        f'"model":"paced","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}'
        "\n\n"
    ).encode()


LONG_CHUNKS = (
    *(_chunk(f'{{"content":"t{i}"}}') for i in range(LONG_EVENTS)),
    b"data: [DONE]\n\n",
)


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def _send(conn: h11.Connection, stream: trio.SocketStream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _json_answer(
    conn: h11.Connection, stream: trio.SocketStream, status: int, body: object
) -> None:
    payload = json.dumps(body).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(payload)))]
    await _send(conn, stream, h11.Response(status_code=status, headers=headers))
    await _send(conn, stream, h11.Data(data=payload))
    await _send(conn, stream, h11.EndOfMessage())


async def _stream_answer(
    conn: h11.Connection, stream: trio.SocketStream, model: str, request_id: str
) -> bool:
    """Send the event stream; False when the peer left before it was complete."""
    head = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
    await _send(conn, stream, h11.Response(status_code=200, headers=head))
    gone = trio.Event()

    async def watch_peer(cancel: trio.CancelScope) -> None:
        # Any byte or EOF after the request body means the peer is done with this exchange.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.receive_some(1)
        gone.set()
        cancel.cancel()

    complete = False
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as sending:
            nursery.start_soon(watch_peer, sending)
            try:
                if model == "bulk":
                    block = b": " + b"x" * (65536 - 3) + b"\n"
                    for _ in range(BULK_BYTES // len(block)):
                        await _send(conn, stream, h11.Data(data=block))
                elif model == "long":
                    for chunk in LONG_CHUNKS:
                        await _send(conn, stream, h11.Data(data=chunk))
                else:
                    await _send(conn, stream, h11.Data(data=_chunk('{"role":"assistant"}')))
                    for i in range(EVENTS):
                        await trio.sleep(GAP)
                        await _send(conn, stream, h11.Data(data=_chunk(f'{{"content":"t{i} "}}')))
                    await _send(conn, stream, h11.Data(data=_chunk("{}", '"stop"')))
                    await _send(conn, stream, h11.Data(data=b"data: [DONE]\n\n"))
                await _send(conn, stream, h11.EndOfMessage())
                complete = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                gone.set()
        nursery.cancel_scope.cancel()
    if gone.is_set() and not complete:
        closes[request_id] = time.monotonic()
        return False
    return complete


async def _serve_connection(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request = await _next_event(conn, stream)
            if not isinstance(request, h11.Request):
                return
            body = b""
            while not isinstance(event := await _next_event(conn, stream), h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.ConnectionClosed):
                    return
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            if request.target == b"/v1/models":
                data = [{"id": m, "object": "model", "owned_by": "bench"} for m in MODELS]
                await _json_answer(conn, stream, 200, {"object": "list", "data": data})
            elif request.target == b"/bench/closes":
                await _json_answer(conn, stream, 200, closes)
            elif request.target == b"/v1/chat/completions":
                model = json.loads(body or b"{}").get("model", "paced")
                request_id = headers.get("x-request-id", "")
                if not await _stream_answer(conn, stream, model, request_id):
                    return
            else:
                await _json_answer(conn, stream, 404, {"error": {"message": "no such route"}})
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


def main() -> None:
    port = int(sys.argv[1])
    trio.run(functools.partial(trio.serve_tcp, _serve_connection, port, host="127.0.0.1"))


if __name__ == "__main__":
    main()
