"""One tunnel stream <-> one HTTP request to the local backend, streaming both ways.

Runs inside the stream's cancel scope (owned by the tunnel session): a Reset from the server, the
request's deadline or the tunnel's end cancels it, and leaving ``client.stream(...)`` under
cancellation closes the backend connection (HTTP/1.1), which is how llama.cpp, Ollama and vLLM learn
to stop generating.

Backend failures are reported as stream resets with a reason the server maps to the client's
answer: ``upstream_unreachable`` when nothing reached the backend (the request may go elsewhere),
``upstream_error`` when it failed after that. :func:`forward` also returns an :class:`Outcome`, so
that the agent can re-probe a backend that looks unwell at once instead of at its next poll.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import httpx

from nfrx.headers import HOP_BY_HOP
from nfrx.protocol import ResetCode

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


def backend_client(max_concurrency: int, *, connect_timeout: float = 10.0) -> httpx.AsyncClient:
    """A pooled keep-alive client for the backend.

    HTTP/1.1 only (httpx's HTTP/2 never tells the server a request was cancelled); no read timeout
    (generations are long; deadlines are Trio scopes); proxies from the environment ignored (the
    backend is local).
    """
    return httpx.AsyncClient(
        http2=False,
        trust_env=False,
        timeout=httpx.Timeout(None, connect=connect_timeout),
        limits=httpx.Limits(
            max_connections=max_concurrency * 2 + 2,
            max_keepalive_connections=max_concurrency * 2 + 2,
            keepalive_expiry=30.0,
        ),
    )


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
    content = None if request.end else _request_body(stream)
    try:
        async with client.stream(request.method, url, headers=headers, content=content) as resp:
            out_headers = tuple(
                (k, v) for k, v in resp.headers.multi_items() if k not in HOP_BY_HOP
            )
            await stream.send_response(resp.status_code, out_headers)
            async for chunk in resp.aiter_raw():
                await stream.send_data(chunk)
            await stream.end()
            return Outcome.SERVER_ERROR if resp.status_code >= 500 else Outcome.ANSWERED
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        stream.reset(
            ResetCode.UPSTREAM_UNREACHABLE, f"cannot reach the backend at {base_url}: {exc}"
        )
        return Outcome.UNREACHABLE
    except httpx.HTTPError as exc:
        stream.reset(
            ResetCode.UPSTREAM_ERROR,
            f"the backend at {base_url} failed: {type(exc).__name__}: {exc}",
        )
        return Outcome.BROKEN
