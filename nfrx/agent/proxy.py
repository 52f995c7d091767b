"""One tunnel stream <-> one HTTP request to the local backend, streaming both ways.

Runs inside the stream's cancel scope (owned by the tunnel session): a Reset from the server, the
request's deadline or the tunnel's end cancels it, and leaving ``client.stream(...)`` under
cancellation closes the backend connection (HTTP/1.1), which is how llama.cpp, Ollama and vLLM learn
to stop generating.

Backend failures are reported as stream resets with a reason the server maps to the client's
answer: ``upstream_unreachable`` when nothing reached the backend (the request may go elsewhere),
``upstream_error`` when it failed after that. The reset's message is for the server's log only
(clients get the code), and its URLs are redacted (:func:`nfrx.redact.redact`) all the same.
:func:`forward` also returns an :class:`Outcome`, so that the agent can re-probe a backend that
looks unwell at once instead of at its next poll.

Two clients carry the backend leg (the decision and its figures: :mod:`nfrx.agent.backend_http`):
a plain ``http://`` backend is spoken to with the lean h11 client of that module, an ``https://``
one with httpx through :class:`ShardedTransport` (whose shards share one TLS context). Either
way the response is relayed by :func:`_relay_response`, which frames what the backend delivered
since the last read as one Data frame.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

import httpx

from nfrx.agent.backend_http import BackendFailed, BackendUnreachable, Origin, OriginPool
from nfrx.headers import HOP_BY_HOP
from nfrx.protocol import ResetCode
from nfrx.redact import redact

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Iterable
    from types import TracebackType

    from nfrx.transport.streams import IncomingStream

_REQUEST_DROP = HOP_BY_HOP | {"host", "authorization", "cookie", "x-api-key", "accept-encoding"}


class Outcome(enum.Enum):
    """How one exchange went, as far as the backend's health is concerned."""

    ANSWERED = "answered"
    """The backend answered with a status below 500 (errors like 400 or 404 included)."""
    SERVER_ERROR = "server_error"
    """The backend answered 5xx (relayed to the client unchanged)."""
    UNREACHABLE = "unreachable"
    """No connection to the backend could be made."""
    BROKEN = "broken"
    """The exchange failed after connecting (the backend closed or garbled the connection)."""

    @property
    def suspect(self) -> bool:
        """True when the backend may be down or unwell: worth probing now."""
        return self is not Outcome.ANSWERED


SHARD_CONNECTIONS = 32
"""Connections per pool shard. httpcore's pool walks every connection it holds on each request
start and release (encode/httpcore#1035), so one pool of 4,000 connections spends the agent's CPU
on that walk; shards of this size keep every walk short."""


class ShardedTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 pools side by side; each request goes to the next shard that has room.

    Together the shards allow ``max_connections``; a request waits for a connection only when
    every shard is full (a shard that is full is skipped while another has room). The shards
    share one TLS context (httpx would build one per shard, ~20-250 ms each: seconds of start-up
    for a large ``MAX_CONCURRENCY``).
    """

    def __init__(self, max_connections: int, *, shard_connections: int = SHARD_CONNECTIONS):
        count = max(1, -(-max_connections // shard_connections))
        per_shard = -(-max_connections // count)
        limits = httpx.Limits(
            max_connections=per_shard, max_keepalive_connections=per_shard, keepalive_expiry=30.0
        )
        self.max_connections = max_connections
        self.tls_context = _tls_context()
        self._shards = [
            httpx.AsyncHTTPTransport(
                verify=self.tls_context, http2=False, trust_env=False, limits=limits
            )
            for _ in range(count)
        ]
        self._in_flight = [0] * count
        self._per_shard = per_shard
        self._next = 0

    def _pick(self) -> int:
        in_flight = self._in_flight
        count = len(in_flight)
        for _ in range(count):
            index = self._next
            self._next = (index + 1) % count
            if in_flight[index] < self._per_shard:
                return index
        return min(range(count), key=in_flight.__getitem__)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self._in_flight[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._in_flight[index] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Counted(response.stream, self._in_flight, index)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, in_flight: list[int], index: int) -> None:
        self._stream = stream
        self._in_flight = in_flight
        self._index = index
        self._open = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # no generator of our own in between

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._in_flight[self._index] -= 1
        await self._stream.aclose()


def _tls_context() -> ssl.SSLContext:
    """The TLS context httpx builds by default (its CA bundle; ``trust_env=False``)."""
    return httpx.create_ssl_context(trust_env=False)


class BackendClient(httpx.AsyncClient):
    """The agent's client for its backend: :func:`forward` sends a plain-http request through
    :meth:`origin`'s lean pool and any other straight to :attr:`pool`; probes use the httpx API.

    Owned by the agent's root task (``async with``); leaving it closes every idle connection.
    """

    def __init__(self, pool: ShardedTransport, timeout: httpx.Timeout) -> None:
        super().__init__(http2=False, trust_env=False, timeout=timeout, transport=pool)
        self.pool = pool
        self.request_timeouts = timeout.as_dict()
        self._connect_timeout = timeout.connect
        self._origins: dict[str, OriginPool | None] = {}

    def origin(self, base_url: str) -> OriginPool | None:
        """The lean keep-alive pool for ``base_url`` if it is a plain ``http://`` URL (made on
        first use, then reused), else None (httpx carries it)."""
        try:
            return self._origins[base_url]
        except KeyError:
            pass
        origin = Origin.parse(base_url)
        pool = None
        if origin is not None:
            pool = OriginPool(
                origin,
                max_connections=self.pool.max_connections,
                connect_timeout=self._connect_timeout or 10.0,
            )
        self._origins[base_url] = pool
        return pool

    def _close_origins(self) -> None:
        for pool in self._origins.values():
            if pool is not None:
                pool.close()

    async def aclose(self) -> None:
        self._close_origins()
        await super().aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._close_origins()
        await super().__aexit__(exc_type, exc_value, traceback)


def backend_client(max_concurrency: int, *, connect_timeout: float = 10.0) -> httpx.AsyncClient:
    """A pooled keep-alive client for the backend.

    HTTP/1.1 only (httpx's HTTP/2 never tells the server a request was cancelled); no read timeout
    (generations are long; deadlines are Trio scopes); proxies from the environment ignored (the
    backend is local); the httpx pool is sharded (:class:`ShardedTransport`), and a plain-http
    backend gets a lean pool of its own (:meth:`BackendClient.origin`), both sized for twice
    ``max_concurrency``.
    """
    pool = ShardedTransport(max_concurrency * 2 + 2)
    return BackendClient(pool, httpx.Timeout(None, connect=connect_timeout))


class _RequestBody:
    """The request body as the server streams it in (an iterator, not an async generator:
    nothing is left to finalise when the backend or a cancellation stops the upload early)."""

    def __init__(self, stream: IncomingStream) -> None:
        self._stream = stream

    def __aiter__(self) -> _RequestBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._stream.receive_some()
        if not chunk:
            raise StopAsyncIteration
        return chunk


async def forward(
    client: httpx.AsyncClient,
    base_url: str,
    stream: IncomingStream,
    *,
    api_key: str = "",
    auth: tuple[tuple[str, str], ...] = (),
) -> Outcome:
    """Relay ``stream``'s request to ``base_url`` + its path and stream the response back.

    ``api_key`` is sent as a bearer token; ``auth`` are other credential headers the backend
    wants (docling-serve's ``X-Api-Key``). The client's own credentials never arrive here.

    Failures reset the stream and are returned, never raised; cancellation (the stream's scope)
    propagates.
    """
    request = stream.request
    headers = [(k, v) for k, v in request.headers if k.lower() not in _REQUEST_DROP]
    headers.append(("accept-encoding", "identity"))
    if api_key:
        headers.append(("authorization", f"Bearer {api_key}"))
    headers.extend(auth)
    content: bytes | AsyncIterator[bytes] | None = None
    if not request.end:
        # A body that came whole with the head (the usual JSON request) goes out with a
        # Content-Length, in one write; a longer one streams (chunked) as it arrives.
        whole = stream.buffered_body()
        content = whole if whole is not None else _RequestBody(stream)
    try:
        plain = client.origin(base_url) if isinstance(client, BackendClient) else None
        if plain is not None:
            response = await plain.send(
                request.method, plain.origin.target(request.path), headers, content
            )
            try:
                await _relay_response(
                    stream, response.status, response.headers, response, request.method
                )
            finally:
                response.close()
            status = response.status
        else:
            status = await _forward_httpx(client, base_url, stream, headers, content)
        return Outcome.SERVER_ERROR if status >= 500 else Outcome.ANSWERED
    except (httpx.ConnectError, httpx.ConnectTimeout, BackendUnreachable) as exc:
        stream.reset(
            ResetCode.UPSTREAM_UNREACHABLE,
            redact(f"cannot reach the backend at {base_url}: {exc}"),
        )
        return Outcome.UNREACHABLE
    except (httpx.HTTPError, BackendFailed) as exc:
        stream.reset(
            ResetCode.UPSTREAM_ERROR,
            redact(f"the backend at {base_url} failed: {type(exc).__name__}: {exc}"),
        )
        return Outcome.BROKEN


async def _forward_httpx(
    client: httpx.AsyncClient,
    base_url: str,
    stream: IncomingStream,
    headers: list[tuple[str, str]],
    content: bytes | AsyncIterator[bytes] | None,
) -> int:
    """The exchange through httpx (an ``https://`` backend); returns the response status."""
    request = stream.request
    url = base_url.rstrip("/") + request.path
    if isinstance(client, BackendClient):
        # Straight to the pool: the client's cookie jar, auth and redirect steps are not
        # wanted here (the backend never gets cookies) and cost CPU on every request.
        outgoing = httpx.Request(
            request.method,
            url,
            headers=headers,
            content=content,
            extensions={"timeout": client.request_timeouts},
        )
        resp = await client.pool.handle_async_request(outgoing)
        resp.request = outgoing
    else:
        resp = await client.send(
            client.build_request(request.method, url, headers=headers, content=content),
            stream=True,
        )
    try:
        body = _HttpxBody(resp.aiter_raw())
        await _relay_response(
            stream, resp.status_code, resp.headers.multi_items(), body, request.method
        )
    finally:
        await resp.aclose()
    return resp.status_code


class _Body(Protocol):
    """A response body being received: what :func:`_relay_response` reads."""

    ended: bool
    """True once the body is complete (the last ``receive_some`` may have returned bytes)."""

    async def receive_some(self) -> bytes:
        """What arrived since the last call (waiting while nothing has), ``b""`` at the end."""
        ...


class _HttpxBody:
    """An httpx body as a :class:`_Body`: one piece per HTTP chunk, as httpx hands them over."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.ended = False

    async def receive_some(self) -> bytes:
        chunk = await anext(self._chunks, b"")
        if not chunk:
            self.ended = True
        return chunk


async def _relay_response(
    stream: IncomingStream,
    status: int,
    headers: Iterable[tuple[str, str]],
    body: _Body,
    method: str,
) -> None:
    """The backend's response head and body onto ``stream``, in as few frames as possible.

    A body of known length is complete data (nothing reads it before its last byte anyway), so
    its head waits for the first body bytes and goes out with them, and its last bytes carry the
    end of the stream: a small answer is one Response and one Data frame, batched into one
    WebSocket message by the session's writer. Any other body (an event stream, chunked) sends
    its head at once and, as one Data frame each time, whatever the backend delivered since the
    last read, so nothing is held back from the client and a burst is not cut into one frame per
    event; the bytes that end the body carry the end of the stream.
    """
    relayed = tuple((k, v) for k, v in headers if k not in HOP_BY_HOP)
    length = _content_length(relayed) if method != "HEAD" and status not in (204, 304) else None
    if length is None:
        await stream.send_response(status, relayed)
        while True:
            chunk = await body.receive_some()
            if body.ended or not chunk:
                await stream.send_data(chunk, end=True)
                return
            await stream.send_data(chunk)
    received = 0
    responded = False
    while chunk := await body.receive_some():
        received += len(chunk)
        last = received >= length
        if not responded:
            await stream.send_response(status, relayed, data=chunk, end=last)
            responded = True
        else:
            await stream.send_data(chunk, end=last)
    if not responded:
        await stream.send_response(status, relayed, end=True)
    elif received < length:  # pragma: no cover -- h11 raises on a short body
        await stream.end()


def _content_length(headers: tuple[tuple[str, str], ...]) -> int | None:
    values = [v for k, v in headers if k == "content-length"]
    if len(values) != 1 or not values[0].isdigit():
        return None
    return int(values[0])
