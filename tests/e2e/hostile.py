"""A hostile agent for end-to-end tests: it speaks the tunnel protocol directly over a real
WebSocket, with no state machine of its own, so it can send anything a broken or malicious agent
could -- frames out of order or for streams it does not own, invalid JSON, huge batches, floods.

Use it against a real ``nfrx serve`` (:func:`tests.e2e.harness.run_server`)::

    async with hostile_agent(server) as agent:
        welcome = await agent.hello(models=("hostile-model",))
        await agent.send(Ping(nonce=1))
        pong = await agent.receive(Pong)
        opened = await agent.receive(Open)            # after a client asked for hostile-model
        await agent.answer(opened, 200, [("content-type", "application/json")], b"{}")

Everything the server sends is read by a background task (batches split, frames decoded) into
:attr:`HostileAgent.frames`, unless ``read=False``: then nothing is read at all, as an agent that
never reads its pongs would behave (the server's writes then back up into the kernel buffers).

After an attack, :func:`assert_whole` checks what must always hold: the server runs and logged no
traceback, a good agent still answers, and no request is stuck in a slot or in the queue.
"""

from __future__ import annotations

import json
import struct
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import httpx
import trio
import trio_websocket

from nfrx.protocol import (
    PROTOCOL_VERSION,
    Frame,
    Headers,
    Hello,
    Open,
    Refuse,
    Response,
    Welcome,
    codec,
)
from nfrx.transport.websocket_agent import MAX_MESSAGE_BYTES, RECEIVE_BUFFER_BYTES
from tests.e2e.harness import Server

F = TypeVar("F", bound=Frame)
_ITEM = struct.Struct(">BI")

Message = str | bytes


class HandshakeRefusedByServer(Exception):
    """The server answered the Hello with a Refuse (the frame is in ``.refuse``)."""

    def __init__(self, refuse: Refuse) -> None:
        super().__init__(f"{refuse.code}: {refuse.message}")
        self.refuse = refuse


@attrs.frozen
class Closed:
    """How the server closed the WebSocket."""

    code: int | None
    reason: str


def message_of(item: Frame | Message) -> Message:
    """The WebSocket message for ``item``: a frame is encoded (no state checks: anything the
    attrs class holds is sent), a ``str``/``bytes`` goes as it is."""
    if isinstance(item, str | bytes):
        return item
    return codec.encode(item)


def batch_of(items: Iterable[Frame | Message]) -> bytes:
    """One batch message holding ``items`` in order, in the layout of :mod:`nfrx.protocol.codec`
    but with none of its limits (any count, empty, nested batches)."""
    parts = [bytes([codec.BATCH_KIND])]
    for item in items:
        message = message_of(item)
        if isinstance(message, str):
            raw = message.encode()
            parts.append(_ITEM.pack(codec.ITEM_TEXT, len(raw)))
        else:
            raw = message
            parts.append(_ITEM.pack(codec.ITEM_BINARY, len(raw)))
        parts.append(raw)
    return b"".join(parts)


def hello_frame(**overrides: Any) -> Hello:
    """A valid Hello of an ``llm`` agent serving ``hostile-model``; ``overrides`` replace fields."""
    fields: dict[str, Any] = {
        "version": PROTOCOL_VERSION,
        "kind": "llm",
        "agent_id": "hostile-1",
        "name": "hostile",
        "agent_version": "0",
        "models": ("hostile-model",),
        "max_concurrency": 4,
        "window": 256 * 1024,
    }
    fields.update(overrides)
    return Hello(**fields)


@attrs.define(eq=False)
class HostileAgent:
    """One raw tunnel connection. Methods never validate what they send."""

    ws: trio_websocket.WebSocketConnection
    frames: list[Frame] = attrs.field(factory=list)
    """Every frame the server sent, in order (batches split)."""
    closed: Closed | None = None
    """Set once the server closed the connection (or it broke)."""
    _cursor: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    # -- sending -------------------------------------------------------------------------------

    async def send_raw(self, message: Message) -> None:
        """Send one WebSocket message as it is."""
        await self.ws.send_message(message)

    async def send(self, *items: Frame | Message) -> None:
        """Send each item as its own WebSocket message."""
        for item in items:
            await self.ws.send_message(message_of(item))

    async def send_batch(self, items: Sequence[Frame | Message]) -> None:
        """Send ``items`` as one batch message."""
        await self.ws.send_message(batch_of(items))

    async def hello(self, **overrides: Any) -> Welcome:
        """Send a Hello (:func:`hello_frame` with ``overrides``) and wait for the answer.

        Raises :class:`HandshakeRefusedByServer` if the server refuses it.
        """
        await self.send(hello_frame(**overrides))
        answer: Frame = await self.receive(Welcome, Refuse)
        if isinstance(answer, Refuse):
            raise HandshakeRefusedByServer(answer)
        assert isinstance(answer, Welcome)
        return answer

    async def answer(
        self,
        request: Open | int,
        status: int = 200,
        headers: Headers | Sequence[tuple[str, str]] = (("content-type", "application/json"),),
        body: bytes = b"",
        *,
        end: bool = True,
    ) -> None:
        """Answer a stream with a Response head and ``body`` (one Data frame, ``end`` set if
        asked), in one batch. The head is sent as given, never checked."""
        stream_id = request.stream_id if isinstance(request, Open) else request
        head = Response(stream_id=stream_id, status=status, headers=tuple(headers))
        data = codec.encode_data(stream_id, body, end=end) if body or end else None
        await self.send_batch([head] if data is None else [head, data])

    # -- receiving -----------------------------------------------------------------------------

    async def receive(self, *kinds: type[F], timeout: float = 10.0) -> F:
        """The next frame (after the last one returned) of one of ``kinds``; frames of other
        kinds are skipped. Raises AssertionError if the connection closes first, TooSlowError
        after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while True:
                while self._cursor < len(self.frames):
                    frame = self.frames[self._cursor]
                    self._cursor += 1
                    if isinstance(frame, kinds):
                        return frame
                if self.closed is not None:
                    names = ", ".join(kind.__name__ for kind in kinds)
                    raise AssertionError(f"closed ({self.closed}) before a {names} arrived")
                await self._changed.wait()

    async def wait_closed(self, timeout: float = 10.0) -> Closed:
        """Wait until the server closes the connection; how it did."""
        with trio.fail_after(timeout):
            while self.closed is None:
                await self._changed.wait()
        return self.closed

    def received(self, kind: type[F]) -> list[F]:
        """Every frame of ``kind`` received so far."""
        return [frame for frame in self.frames if isinstance(frame, kind)]

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes) and codec.is_batch(message):
                    items = codec.split_batch(message)
                else:
                    items = [message]
                self.frames.extend(codec.decode(item) for item in items)
                self._wake()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            self.closed = Closed(
                reason.code if reason is not None else None,
                (reason.reason or "") if reason is not None else "",
            )
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def hostile_agent(
    server: Server,
    *,
    key: str | None = None,
    kind: str = "llm",
    read: bool = True,
    receive_buffer: int | None = None,
) -> AsyncIterator[HostileAgent]:
    """A raw WebSocket to ``server``'s ``/api/<kind>/connect`` with ``key`` (default: the
    server's client key) as the bearer; closed when the block ends.

    ``read=False``: nothing is ever read (see the module docstring); ``receive_buffer`` sets the
    socket's ``SO_RCVBUF``, so that the server's writes back up after a few KiB instead of
    several MiB.
    """
    bearer = server.client_key if key is None else key
    headers = [(b"authorization", f"Bearer {bearer}".encode())] if bearer else []
    url = urllib.parse.urlsplit(server.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting: it decides the window scale
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    with trio.fail_after(10):
        await sock.connect((host, port))
    stream = trio.SocketStream(sock)
    async with stream, trio.open_nursery() as nursery:
        with trio.fail_after(10):
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                f"{host}:{port}",
                f"/api/{kind}/connect",
                extra_headers=headers,
                max_message_size=MAX_MESSAGE_BYTES,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
            )
        agent = HostileAgent(ws)
        if read:
            nursery.start_soon(agent._read)
        try:
            yield agent
        finally:
            # A server that does not answer our close (or an agent that never reads, so never
            # sees the answer) must not hold the test up.
            with trio.move_on_after(2 if read else 0.1, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


def control(obj: dict[str, Any]) -> str:
    """A control message from a plain dict (for frames the attrs classes cannot express)."""
    return json.dumps(obj, separators=(",", ":"))


# -- what must hold after any attack -----------------------------------------------------------


async def chat(http: httpx.AsyncClient, server: Server, model: str) -> httpx.Response:
    """A minimal chat completion request for ``model``."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return await http.post(
        f"{server.api_base}/chat/completions", headers=server.headers(), json=body
    )


async def llm_state(http: httpx.AsyncClient, server: Server) -> dict[str, Any]:
    """The ``llm`` part of ``/api/state``."""
    response = await http.get(f"{server.url}/api/state", headers=server.headers())
    assert response.status_code == 200, response.text
    llm: dict[str, Any] = response.json()["plugins"]["llm"]
    return llm


async def assert_whole(
    server: Server, *, good_model: str = "fixture-model", log_from: int = 0
) -> None:
    """The server process runs and logged no traceback (from its line ``log_from`` on), an agent
    serving ``good_model`` answers a chat completion, and once the attacker's requests have
    unwound (waited for, 15 s at most) no agent has a request in flight and the queue is empty."""
    assert server.proc.process.returncode is None, server.proc.output()
    async with httpx.AsyncClient(timeout=20) as http:
        response = await chat(http, server, good_model)
        assert response.status_code == 200, response.text
        assert response.json()["object"] == "chat.completion"
        with trio.fail_after(15):
            while True:
                llm = await llm_state(http, server)
                busy = [agent["name"] for agent in llm["agents"] if agent["inflight"]]
                if not busy and llm["queue"]["length"] == 0:
                    break
                # Another process's state, visible only over HTTP: polling is the way.
                await trio.sleep(0.05)
    logged = "\n".join(server.proc.lines[log_from:])
    assert "Traceback" not in logged, logged
