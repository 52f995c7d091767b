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
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import httpx

from nfrx.headers import HOP_BY_HOP
from nfrx.protocol import ResetCode
from nfrx.redact import redact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

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
    every shard is full (a shard that is full is skipped while another has room).
    """

    def __init__(self, max_connections: int, *, shard_connections: int = SHARD_CONNECTIONS):
        count = max(1, -(-max_connections // shard_connections))
        per_shard = -(-max_connections // count)
        limits = httpx.Limits(
            max_connections=per_shard, max_keepalive_connections=per_shard, keepalive_expiry=30.0
        )
        self._shards = [
            httpx.AsyncHTTPTransport(http2=False, trust_env=False, limits=limits)
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


class BackendClient(httpx.AsyncClient):
    """The agent's client for its backend; :func:`forward` sends straight to :attr:`pool`."""

    def __init__(self, pool: ShardedTransport, timeout: httpx.Timeout) -> None:
        super().__init__(http2=False, trust_env=False, timeout=timeout, transport=pool)
        self.pool = pool
        self.request_timeouts = timeout.as_dict()


def backend_client(max_concurrency: int, *, connect_timeout: float = 10.0) -> httpx.AsyncClient:
    """A pooled keep-alive client for the backend.

    HTTP/1.1 only (httpx's HTTP/2 never tells the server a request was cancelled); no read timeout
    (generations are long; deadlines are Trio scopes); proxies from the environment ignored (the
    backend is local); the pool is sharded (:class:`ShardedTransport`).
    """
    pool = ShardedTransport(max_concurrency * 2 + 2)
    return BackendClient(pool, httpx.Timeout(None, connect=connect_timeout))


async def _request_body(stream: IncomingStream) -> AsyncIterator[bytes]:
    while chunk := await stream.receive_some():
        yield chunk


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
    url = base_url.rstrip("/") + request.path
    content: bytes | AsyncIterator[bytes] | None = None
    if not request.end:
        # A body that came whole with the head (the usual JSON request) goes out with a
        # Content-Length, in one write; a longer one streams (chunked) as it arrives.
        whole = stream.buffered_body()
        content = whole if whole is not None else _request_body(stream)
    try:
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
            await _relay_response(stream, resp, head_only=request.method == "HEAD")
        finally:
            await resp.aclose()
        return Outcome.SERVER_ERROR if resp.status_code >= 500 else Outcome.ANSWERED
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        stream.reset(
            ResetCode.UPSTREAM_UNREACHABLE,
            redact(f"cannot reach the backend at {base_url}: {exc}"),
        )
        return Outcome.UNREACHABLE
    except httpx.HTTPError as exc:
        stream.reset(
            ResetCode.UPSTREAM_ERROR,
            redact(f"the backend at {base_url} failed: {type(exc).__name__}: {exc}"),
        )
        return Outcome.BROKEN


async def _relay_response(stream: IncomingStream, resp: httpx.Response, *, head_only: bool) -> None:
    """The backend's response head and body onto ``stream``, in as few frames as possible.

    A body of known length is complete data (nothing reads it before its last byte anyway), so
    its head waits for the first body bytes and goes out with them, and its last bytes carry the
    end of the stream: a small answer is one Response and one Data frame, batched into one
    WebSocket message by the session's writer. Any other body (an event stream, chunked) sends
    its head at once and every chunk as it arrives, so nothing is held back from the client.
    """
    headers = tuple((k, v) for k, v in resp.headers.multi_items() if k not in HOP_BY_HOP)
    status = resp.status_code
    length = _content_length(resp) if not head_only and status not in (204, 304) else None
    chunks = resp.aiter_raw()
    if length is None:
        await stream.send_response(status, headers)
        async for chunk in chunks:
            await stream.send_data(chunk)
        await stream.end()
        return
    received = 0
    responded = False
    async for chunk in chunks:
        received += len(chunk)
        last = received >= length
        if not responded:
            await stream.send_response(status, headers, data=chunk, end=last)
            responded = True
        else:
            await stream.send_data(chunk, end=last)
    if not responded:
        await stream.send_response(status, headers, end=True)
    elif received < length:  # pragma: no cover -- h11 raises on a short body
        await stream.end()


def _content_length(resp: httpx.Response) -> int | None:
    values = resp.headers.get_list("content-length")
    if len(values) != 1 or not values[0].isdigit():
        return None
    return int(values[0])
