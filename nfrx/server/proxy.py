"""Relay one HTTP exchange through an agent's tunnel and stream the answer back to the client.

Ownership and cancellation: the request's ASGI call owns the exchange. Whatever ends it -- the
body fully relayed, the client disconnecting (quart-trio cancels the handler or closes the body
iterator), the deadline, the agent failing -- :meth:`Exchange.finish` runs exactly once, resets the
stream if it is still live (the agent then cancels its backend request) and gives the agent's slot
back. ``finish`` never blocks, so it is safe in every ``finally`` and in the app's per-request
cleanup, which also covers a client that leaves before the body iterator was ever started.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio
from quart import Response
from werkzeug.datastructures import Headers

from nfrx.headers import HOP_BY_HOP
from nfrx.protocol import ResetCode
from nfrx.server.http_errors import from_tunnel_error, request_timeout
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from nfrx.server.registry import AgentRecord, AgentRegistry
    from nfrx.transport.streams import OutgoingStream

log = logging.getLogger("nfrx.proxy")

_RESPONSE_DROP = HOP_BY_HOP | {"set-cookie", "server", "date"}


class RelayBroken(Exception):
    """A non-event-stream body could not be completed; the client connection must be cut so the
    truncation is visible (never a silently shortened 200)."""


def response_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The agent's response headers minus hop-by-hop and server-owned ones."""
    return [(k, v) for k, v in headers if k.lower() not in _RESPONSE_DROP]


@attrs.define(eq=False)
class Exchange:
    """One relayed request: the chosen agent, its stream, and the bookkeeping to undo."""

    registry: AgentRegistry
    agent: AgentRecord
    stream: OutgoingStream
    deadline: float
    timeout: float
    request_id: str
    label: str
    started: float = attrs.field(factory=trio.current_time)
    status: int | None = None
    failed: bool = False
    _finished: bool = False

    def finish(self, *, code: str = ResetCode.CANCELLED, failed: bool | None = None) -> None:
        """End the exchange: reset the stream if it is still live, free the slot. Idempotent."""
        if self._finished:
            return
        self._finished = True
        if self.stream.live:
            self.stream.reset(code)
            if failed is None:
                failed = True
        if failed is not None:
            self.failed = failed
        self.registry.release(self.agent, failed=self.failed)
        log.info(
            "%s agent=%s status=%s duration=%.3fs request_id=%s%s",
            self.label,
            self.agent.name,
            self.status if self.status is not None else "-",
            trio.current_time() - self.started,
            self.request_id,
            " (abandoned)" if self.failed and self.status is not None else "",
        )


async def relay(
    registry: AgentRegistry,
    agent: AgentRecord,
    *,
    method: str,
    path: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    deadline: float,
    timeout: float,
    request_id: str,
    label: str,
    cleanups: list[Callable[[], None]],
) -> Response:
    """Send the request to ``agent`` (whose slot the caller acquired) and return the response.

    Raises :class:`HttpError` when the exchange fails before the response head arrived (the slot
    is freed and the stream reset by then). Once the head is back, failures surface in the body:
    a final SSE ``error`` event for event streams, a cut connection otherwise.
    """
    try:
        stream = agent.session.open_stream(
            method, path, headers, timeout=max(deadline - trio.current_time(), 0.001), end=not body
        )
    except TunnelClosed as exc:
        registry.release(agent, failed=True)
        raise from_tunnel_error(exc) from None
    exchange = Exchange(registry, agent, stream, deadline, timeout, request_id, label)
    cleanups.append(exchange.finish)
    try:
        with trio.CancelScope(deadline=deadline) as scope:
            if body:
                await stream.send_data(body, end=True)
            head = await stream.receive_response()
    except (StreamReset, TunnelClosed) as exc:
        error = from_tunnel_error(exc)
        exchange.status = error.status
        exchange.finish(failed=True)
        raise error from None
    if scope.cancelled_caught:
        exchange.status = 504
        exchange.finish(code=ResetCode.TIMEOUT, failed=True)
        raise request_timeout(timeout)
    exchange.status = head.status
    headers_out = response_headers(head.headers)
    content_type = next((v for k, v in headers_out if k.lower() == "content-type"), "")
    event_stream = content_type.split(";")[0].strip().lower() == "text/event-stream"
    if event_stream:
        headers_out = [(k, v) for k, v in headers_out if k.lower() != "cache-control"]
        headers_out.append(("Cache-Control", "no-store"))
    headers_out.append(("X-Request-Id", request_id))
    if head.end:
        exchange.finish(failed=False)
        response = Response(b"", status=head.status, headers=Headers(headers_out))
    else:
        response = Response(
            _body(exchange, event_stream), status=head.status, headers=Headers(headers_out)
        )
    response.timeout = None  # Quart's 60 s default would cut long generations
    return response


async def _body(exchange: Exchange, event_stream: bool) -> AsyncIterator[bytes]:
    # The cancel scope wraps each receive only, never a yield (structured concurrency in an async
    # generator); GeneratorExit (client gone while we were parked at yield) runs the finally.
    stream = exchange.stream
    try:
        while True:
            with trio.move_on_at(exchange.deadline) as scope:
                chunk = await stream.receive_some()
            if scope.cancelled_caught:
                exchange.finish(code=ResetCode.TIMEOUT, failed=True)
                if event_stream:
                    yield request_timeout(exchange.timeout).sse_event()
                    return
                raise RelayBroken("deadline passed mid-body")
            if not chunk:
                exchange.finish(failed=False)
                return
            yield chunk
    except (StreamReset, TunnelClosed) as exc:
        exchange.finish(failed=True)
        if not event_stream:
            raise RelayBroken(str(exc)) from None
        yield from_tunnel_error(exc).sse_event()
    finally:
        exchange.finish()
