"""The agent's lean HTTP/1.1 client for a plain ``http://`` backend: h11 over Trio sockets.

Decision (issue 16). The agent relays every request to a local backend; httpx (httpx -> httpcore ->
anyio -> trio) cost about 1 ms of CPU per small request here, most of it layers that the relay
does not need (URL and header models, the pool's locks and walks, anyio's socket wrapper, a
response object and byte-stream adapters per request). For ``http://`` backends -- the normal
case: llama.cpp, Ollama, vLLM, docling-serve next to the agent -- this module speaks HTTP/1.1 with
h11 directly over Trio sockets; ``https://`` backends keep httpx (``nfrx.agent.proxy``), which
earns its cost there: certificate verification against its CA bundle, SNI, TLS error reporting.
Proxies are no reason to keep it: the agent never used them (``trust_env=False``). Measured with
``bench/backend_leg.py`` (one process, 3,000 sequential POSTs of a 70-byte JSON body to nginx
answering a canned 150-byte JSON, CPU of the client process per request; 2 cores, load average
2.2 from other work, 2026-12-03):

============================  ===============  ===================
client                        CPU µs/request   requests/s (1 conn)
============================  ===============  ===================
httpx pool path (before)      575              1,728
this module                   228              4,018
============================  ===============  ===================

``bench/run.py`` measures the same leg in each run. It also lets the relay batch by what is waiting:
:meth:`BackendResponse.receive_some` reads the socket in :data:`READ_SIZE` reads and returns every
body byte they brought, where httpx hands over one piece per HTTP chunk -- a backend that wrote
fifty events at once made fifty tunnel frames; now it makes one. Nothing waits for more bytes to
arrive: a lone event is returned as soon as it is read. A chunked body (every token stream) is
decoded by :mod:`nfrx.agent.chunked` rather than by h11, which makes each chunk an event: that
was 40 % of the agent's CPU relaying a 500-event stream.

Contract (everything the httpx path did, kept):

* HTTP/1.1 only; connections kept alive and reused, newest first; an idle connection is dropped
  after :data:`KEEPALIVE_EXPIRY` seconds, or when the backend closed it (it turned readable while
  idle); at most ``max_connections`` open at once (a request waits for a slot).
* Connecting is bounded by ``connect_timeout``; nothing else has a timeout (generations are long;
  deadlines are the caller's Trio scopes).
* A whole request body goes with ``Content-Length``, in one write with the head; a streamed body
  goes chunked, each chunk written before the next is read (backpressure). As httpcore does, a
  write that fails because the backend gave up on the request (it answered early and closed) is
  not an error by itself: the answer it sent is read and relayed.
* Only a response read to its end returns its connection to the pool. :meth:`BackendResponse.close`
  -- never blocking, called in a ``finally`` -- closes it otherwise, and any failure or
  cancellation while the request is being sent closes it too: the backend sees the connection
  end, which is how llama.cpp and Ollama learn to stop generating.
* Errors are translated once, here: :class:`BackendUnreachable` when no connection could be made
  (the request may go to another agent), :class:`BackendFailed` for anything after that (an h11
  protocol error, a connection reset, an early close). Cancellation propagates.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING, Final

import attrs
import h11
import trio

from nfrx.agent.chunked import ChunkedDecoder, ChunkedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

READ_SIZE: Final = 64 * 1024
"""Bytes asked of the socket per read (httpcore's size); a read returns what is there."""

MAX_HEAD_BYTES: Final = 100 * 1024
"""Largest response head accepted (httpcore's limit; h11's default is 16 KiB)."""

KEEPALIVE_EXPIRY: Final = 30.0
"""Seconds an idle connection is kept for reuse (httpx's value in the agent)."""

_PLAIN_TARGET = re.compile(r"[\x21-\x7e]+")
"""A request target h11 sends as it is; anything else is percent-encoded first (as httpx did)."""

_TARGET_SAFE = "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~"
"""Printable ASCII punctuation that percent-encoding leaves alone (``%`` included: an existing
escape stays as it is)."""


class BackendUnreachable(Exception):
    """No connection to the backend could be made (refused, no route, name unknown, timed out)."""


class BackendFailed(Exception):
    """The exchange failed after connecting: the backend reset, closed early or broke HTTP."""


@attrs.frozen
class Origin:
    """Where a plain-http base URL points: the address, the ``Host`` header, the path prefix."""

    host: str
    port: int
    host_header: str
    base_path: str

    @classmethod
    def parse(cls, base_url: str) -> Origin | None:
        """The origin of an ``http://`` URL; None for any other scheme (or no host)."""
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme.lower() != "http" or not parts.hostname:
            return None
        host = parts.hostname
        port = parts.port or 80
        name = f"[{host}]" if ":" in host else host
        return cls(
            host=host,
            port=port,
            host_header=name if port == 80 else f"{name}:{port}",
            base_path=parts.path.rstrip("/"),
        )

    def target(self, path: str) -> bytes:
        """The request target for ``path`` (which may carry a query) under the base path."""
        target = self.base_path + path
        if not _PLAIN_TARGET.fullmatch(target):
            target = urllib.parse.quote(target, safe=_TARGET_SAFE) or "/"
        return target.encode("ascii")


def _h11_client() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)


class _Connection:
    """One keep-alive connection: the socket and its h11 state."""

    __slots__ = ("h11", "idle_since", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = _h11_client()
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Idle for less than KEEPALIVE_EXPIRY and not closed (or written to) by the backend."""
        return now - self.idle_since < KEEPALIVE_EXPIRY and not self.stream.socket.is_readable()

    def close(self) -> None:
        """Close the socket now (no await: safe in ``finally`` and under cancellation)."""
        self.stream.socket.close()


class BackendResponse:
    """A response head, and its body as it arrives; :meth:`close` it when done (in ``finally``).

    Owned by the task that sent the request; only that task reads it. A chunked body is decoded
    by :class:`~nfrx.agent.chunked.ChunkedDecoder` (h11 would make every chunk an event), any
    other by h11.
    """

    def __init__(self, pool: OriginPool, conn: _Connection, head: h11.Response, method: str):
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status = head.status_code
        self.headers = _decode(head.headers)
        """Names lower-cased, as h11 gives them; values decoded as UTF-8 (else Latin-1)."""
        self.ended = False
        """True once the whole body has been received (the last :meth:`receive_some` may
        still have returned bytes)."""
        self._decoder: ChunkedDecoder | None = None
        self._raw = b""
        """Body bytes h11 read with the head (the chunked decoder's first input)."""
        self._keep_alive = False
        """Whether a chunked response lets the connection be reused (h11 tracks its own)."""
        if (
            method != "HEAD"
            and self.status not in (204, 304)
            and any(name == b"transfer-encoding" for name, _ in head.headers)
        ):
            # h11 accepted the head, so the coding is exactly "chunked".
            self._decoder = ChunkedDecoder()
            self._raw = conn.h11.trailing_data[0]
            self._keep_alive = head.http_version == b"1.1" and not any(
                name == b"connection" and b"close" in value.lower() for name, value in head.headers
            )

    async def receive_some(self) -> bytes:
        """Every body byte received and not returned yet -- reading the socket (once) only when
        there is none -- or ``b""`` once the body has ended. Raises :class:`BackendFailed`."""
        conn = self._conn
        if self.ended or conn is None:
            await trio.lowlevel.checkpoint()
            return b""
        if self._decoder is not None:
            data = await self._receive_chunked(conn, self._decoder)
        else:
            data = await self._receive_h11(conn)
        if not data:
            await trio.lowlevel.checkpoint()
        return data

    async def _receive_chunked(self, conn: _Connection, decoder: ChunkedDecoder) -> bytes:
        raw, self._raw = self._raw, b""
        while True:
            try:
                data = decoder.feed(raw) if raw else b""
            except ChunkedError as exc:
                raise BackendFailed(f"invalid response body: {exc}") from None
            if decoder.done:
                self.ended = True
                return data
            if data:
                return data
            raw = await _receive(conn)
            if not raw:
                raise BackendFailed("the backend closed the connection before the end of the body")

    async def _receive_h11(self, conn: _Connection) -> bytes:
        state = conn.h11
        parts: list[bytes | bytearray] = []
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                raise BackendFailed(f"invalid response body: {exc}") from None
            if event is h11.NEED_DATA:
                if parts:
                    break
                state.receive_data(await _receive(conn))
            elif type(event) is h11.Data:
                parts.append(event.data)
            elif type(event) is h11.EndOfMessage:
                self.ended = True
                break
            else:  # pragma: no cover -- h11 yields nothing else inside a response body
                raise BackendFailed(f"unexpected {type(event).__name__} in a response body")
        return b"".join(parts)

    def close(self) -> None:
        """Give the connection back for reuse if the body was read to its end (and the backend
        keeps connections alive), else close it: the backend sees the connection end.
        Idempotent; never blocks."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, reusable=self.ended and self._ready_for_reuse(conn))

    def _ready_for_reuse(self, conn: _Connection) -> bool:
        state = conn.h11
        if self._decoder is None:
            if state.our_state is not h11.DONE or state.their_state is not h11.DONE:
                return False
            state.start_next_cycle()
            return True
        if not self._keep_alive or self._decoder.leftover or state.our_state is not h11.DONE:
            return False
        conn.h11 = _h11_client()  # h11 never saw the body: start from a fresh state
        return True


class OriginPool:
    """Keep-alive connections to one plain-http backend (see the module docstring).

    Lives as long as the agent; :meth:`close` closes the idle connections (requests in flight
    close theirs as they finish).
    """

    def __init__(self, origin: Origin, *, max_connections: int, connect_timeout: float) -> None:
        self.origin = origin
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(max_connections)
        self._closed = False

    async def send(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> BackendResponse:
        """Send a request and return once its response head arrived.

        ``headers`` must not frame the body (no ``content-length``, ``transfer-encoding`` or
        ``host``): this adds them. Raises :class:`BackendUnreachable` or :class:`BackendFailed`;
        on any exception (cancellation included) the connection is closed.
        """
        await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = await self._connection()
            head = await _exchange(conn, method, target, self._head(headers, body), body)
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        return BackendResponse(self, conn, head, method)

    def _head(
        self, headers: list[tuple[str, str]], body: bytes | AsyncIterator[bytes] | None
    ) -> list[tuple[bytes, bytes]]:
        try:
            out = [(b"host", self.origin.host_header.encode())]
            out += [(name.encode(), value.encode()) for name, value in headers]
        except UnicodeEncodeError as exc:
            raise BackendFailed(f"a request header cannot be encoded: {exc}") from None
        if isinstance(body, bytes):
            out.append((b"content-length", str(len(body)).encode()))
        elif body is not None:
            out.append((b"transfer-encoding", b"chunked"))
        return out

    async def _connection(self) -> _Connection:
        idle = self._idle
        if idle:
            now = trio.current_time()
            while idle:
                conn = idle.pop()
                if conn.reusable(now):
                    return conn
                conn.close()
        origin = self.origin
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(origin.host, origin.port)
        except trio.TooSlowError:
            raise BackendUnreachable(
                f"no connection within {self.connect_timeout:g} s (connect timeout)"
            ) from None
        except OSError as exc:
            raise BackendUnreachable(str(exc)) from None
        return _Connection(stream)

    def _release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable and not self._closed:
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def close(self) -> None:
        """Close every idle connection; connections in use close when released. Never blocks."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


async def _exchange(
    conn: _Connection,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | AsyncIterator[bytes] | None,
) -> h11.Response:
    """Write the request on ``conn`` and read the response head."""
    state = conn.h11
    try:
        head = state.send(h11.Request(method=method, target=target, headers=headers))
    except h11.LocalProtocolError as exc:
        raise BackendFailed(f"the request cannot be sent: {exc}") from None
    assert head is not None
    try:
        if body is None or isinstance(body, bytes):
            data = head
            if body:
                data += state.send(h11.Data(data=body)) or b""
            await conn.stream.send_all(data + (state.send(h11.EndOfMessage()) or b""))
        else:
            await conn.stream.send_all(head)
            async for chunk in body:
                if chunk:
                    await conn.stream.send_all(state.send(h11.Data(data=chunk)) or b"")
            await conn.stream.send_all(state.send(h11.EndOfMessage()) or b"")
    except (trio.BrokenResourceError, OSError):
        pass  # the backend may have answered and closed early: read what it said (see above)
    while True:
        try:
            event = state.next_event()
        except h11.RemoteProtocolError as exc:
            raise BackendFailed(f"invalid response: {exc}") from None
        if event is h11.NEED_DATA:
            data = await _receive(conn)
            if not data:
                raise BackendFailed("the backend closed the connection without a response")
            state.receive_data(data)
        elif type(event) is h11.Response:
            return event
        elif type(event) is not h11.InformationalResponse:  # pragma: no cover -- h11 guarantees
            raise BackendFailed(f"unexpected {type(event).__name__} before the response head")


async def _receive(conn: _Connection) -> bytes:
    """One read from the backend's socket: what is there (at most READ_SIZE), ``b""`` at EOF."""
    try:
        return await conn.stream.receive_some(READ_SIZE)
    except (trio.BrokenResourceError, OSError) as exc:
        raise BackendFailed(f"the connection broke: {exc}") from None


def _decode(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header names are ASCII (h11 checked); values are UTF-8 if they all decode so, else
    Latin-1, byte for byte (httpx's rule)."""
    try:
        return [(name.decode("ascii"), value.decode()) for name, value in headers]
    except UnicodeDecodeError:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
