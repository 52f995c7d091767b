"""One public MCP exchange relayed through a tunnel stream, with its timeout and cancellation.

:class:`McpExchange` is created by the route once the request passed every check. It opens the
tunnel stream, sends the body and waits for the response head; then the body is relayed:

* an **SSE** answer is parsed with :class:`~nfrx.plugins.mcp.wire.SseParser` and every event is
  forwarded verbatim as it arrives (comments too); an event with data is provider activity and
  restarts the call's inactivity clock; one over ``BROKER_MAX_RESP_BYTES`` ends the stream with a
  final JSON-RPC error event;
* any other answer (JSON, a 202, an error status) is one message: it is read whole (bounded by
  ``BROKER_MAX_RESP_BYTES``, else replaced by an ``MCP_LIMIT_EXCEEDED`` error) and passed on.

Every wait runs inside :meth:`Call.watch <nfrx.plugins.mcp.sessions.Call.watch>`, so one cancel
scope carries all the triggers that belong to the call: the inactivity and absolute deadlines, the
client's own ``notifications/cancelled``, DELETE or reaping of its session. Tunnel loss surfaces as
:class:`TunnelClosed` from the stream. Client disconnect is quart-trio cancelling the handler
(before the head) or closing the body generator (``GeneratorExit`` at a ``yield``); both end in
:meth:`McpExchange.finish`, which also sits in the request's cleanups for the gap between the
route returning and Quart starting the body. ``finish`` is idempotent and never blocks: it resets
the stream if it is still live (the agent cancels the provider's work per era), frees the slot and
drops the call from its relay.

What the client sees when a request ends early: one JSON-RPC error for its id -- a 200 JSON body
if nothing was sent yet, else a final SSE event -- and then nothing more; a request the client
cancelled itself just ends (the spec: no answer is expected).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio
from quart import Response
from werkzeug.datastructures import Headers

from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.sessions import Call, EndedBy
from nfrx.protocol import ResetCode
from nfrx.redact import redact
from nfrx.server import accounting
from nfrx.server.proxy import is_event_stream, streaming_response
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from prometheus_client import Counter

    from nfrx.plugins.mcp.sessions import RelayState
    from nfrx.protocol import Response as ResponseHead
    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord
    from nfrx.transport.streams import OutgoingStream

log = logging.getLogger("nfrx.mcp")

SSE_HEADERS: Final = (("cache-control", "no-cache"), ("x-accel-buffering", "no"))
_UNAVAILABLE: Final = frozenset(
    {ResetCode.UPSTREAM_UNREACHABLE, ResetCode.DRAINING, ResetCode.OVERLOADED}
)
"""Reset codes that mean the provider could not take the request (worth a retry)."""
_KNOWN_FAILURES: Final = frozenset(
    {ResetCode.UPSTREAM_ERROR, ResetCode.BAD_AGENT_RESPONSE, ResetCode.INTERNAL}
)
"""Reset codes a client may see by name; any other an agent sends is ``agent_error``."""


def tunnel_error(request_id: str | None, exc: StreamReset | TunnelClosed, req_id: str) -> bytes:
    """The JSON-RPC error a client gets when the tunnel stream failed under its request: the
    reset code, never the relay's own words (see :func:`nfrx.server.http_errors.from_tunnel_error`;
    :meth:`McpExchange.tunnel_failed` logs those)."""
    code, text, retryable = _tunnel_failure(exc)
    return wire.relay_error(request_id, code, text, retryable=retryable, req_id=req_id)


def _tunnel_failure(exc: StreamReset | TunnelClosed) -> tuple[str, str, bool]:
    """What a failed tunnel stream means for the client: relay code, text, retryable."""
    if isinstance(exc, TunnelClosed):
        return wire.RelayCode.PROVIDER_UNAVAILABLE, "the relay disconnected", True
    if exc.code == ResetCode.TIMEOUT:
        return wire.RelayCode.TIMEOUT, "the relay gave up waiting for the provider", True
    if exc.code in _UNAVAILABLE:
        text = f"the provider is not available ({exc.code})"
        return wire.RelayCode.PROVIDER_UNAVAILABLE, text, True
    named = exc.code if exc.code in _KNOWN_FAILURES else "agent_error"
    return wire.RelayCode.UPSTREAM_ERROR, f"the provider failed ({named})", False


@attrs.define(eq=False, kw_only=True)
class McpExchange:
    """One public exchange on one relay (see the module docstring)."""

    gateway: Gateway
    agent: AgentRecord
    relay: RelayState
    call: Call
    message: wire.Message | None
    """The client's message (POST), None for GET and DELETE."""
    label: str
    req_id: str
    counted: bool
    """True when the exchange holds one of the agent's slots (JSON-RPC requests only)."""
    kind: str
    """What the exchange carries (the Meta KIND annotation), for metrics."""
    exchanges: Counter
    """``nfrx_mcp_exchanges``, counted when it ends (:attr:`McpRelays.exchanges
    <nfrx.plugins.mcp.sessions.McpRelays.exchanges>`)."""
    stream: OutgoingStream | None = None
    status: int | None = None
    _finished: bool = False

    @property
    def request_id(self) -> str | None:
        return self.call.request_id

    def start(self) -> None:
        self.relay.add(self.call)
        if self.counted:
            self.gateway.registry.acquire(self.agent)

    def finish(
        self, *, code: str = ResetCode.CANCELLED, failed: bool = True, cancelled: bool = False
    ) -> None:
        """End the exchange (idempotent, never blocks): reset a live stream, free the slot,
        count and log the outcome. ``cancelled``: the client left (see :meth:`client_left`);
        a call stopped by the client's ``notifications/cancelled`` or the end of its session
        counts as cancelled too. A cancelled call is no failure of the relay's agent."""
        if self._finished:
            return
        self._finished = True
        if self.stream is not None and self.stream.live:
            self.stream.reset(code)
        self.relay.remove(self.call)
        by_client = cancelled or self.call.ended_by is not None
        if self.counted:
            self.gateway.registry.release(self.agent, failed=failed, cancelled=by_client)
        outcome = self._outcome(code, failed, cancelled)
        self.exchanges.labels(self.agent.id, self.kind, outcome).inc()
        record = accounting.current()
        if record is not None:
            record.exchange_ended(
                f"mcp:{self.agent.id}",
                None,
                failed=outcome in ("error", "timeout"),
                cancelled=outcome in ("cancelled", EndedBy.CLIENT_CANCELLED, EndedBy.SESSION_ENDED),
            )
        log.info(
            "%s relay=%s status=%s duration=%.3fs%s request_id=%s",
            self.label,
            self.agent.id,
            self._shown_status(by_client),
            trio.current_time() - self.call.started,
            f" ended_by={self.call.ended_by}" if self.call.ended_by else "",
            self.req_id,
        )

    def _shown_status(self, by_client: bool) -> str:
        """The access log's ``status=``: the provider's, or how the client ended the exchange
        (a long-lived stream the client closes is how such a stream normally ends)."""
        status = str(self.status) if self.status is not None else "-"
        if not by_client:
            return status
        if self.call.stream and self.status is not None:
            return f"{status} closed by client"
        return "- cancelled by client"

    def client_left(self) -> None:
        """The client is gone before the exchange ended (quart-trio cancelled the handler, the
        body generator was closed, or the request's cleanups ran first)."""
        self.finish(cancelled=True)

    def _outcome(self, code: str, failed: bool, cancelled: bool) -> str:
        """The ``nfrx_mcp_exchanges`` outcome label."""
        if code == ResetCode.TIMEOUT:
            return "timeout"
        if self.call.ended_by is not None:
            return self.call.ended_by
        if cancelled:
            return "cancelled"
        if failed or self.status is None or self.status >= 400:
            return "error"
        return "success"

    # -- outcomes ------------------------------------------------------------------------------

    def tunnel_failed(self, exc: StreamReset | TunnelClosed) -> bytes:
        """End the exchange after its stream failed; log why (the relay's words, redacted) and
        return the client's JSON-RPC error (which has only the code)."""
        self.finish()
        reason = exc.reason if isinstance(exc, TunnelClosed) else f"{exc.code[:64]}: {exc.message}"
        log.warning(
            "%s relay=%s: %s request_id=%s", self.label, self.agent.id, redact(reason), self.req_id
        )
        return tunnel_error(self.call.request_id, exc, self.req_id)

    def _stopped_code(self) -> str:
        """The reset code for a call whose scope was cancelled (and log a timeout)."""
        if self.call.ended_by == EndedBy.CLIENT_CANCELLED:
            return wire.CLIENT_CANCELLED
        if self.call.ended_by is not None:
            return ResetCode.CANCELLED
        log.warning(
            "MCP call timed out: relay=%s method=%s id=%s after %.3fs request_id=%s",
            self.agent.id,
            self.call.method or "-",
            self.call.request_id or "-",
            trio.current_time() - self.call.started,
            self.req_id,
        )
        return ResetCode.TIMEOUT

    def _stopped_error(self) -> bytes | None:
        """What the client is told for a stopped call (None: nothing, it cancelled itself)."""
        call = self.call
        if call.ended_by == EndedBy.CLIENT_CANCELLED:
            return None
        if call.ended_by == EndedBy.SESSION_ENDED:
            return wire.relay_error(
                call.request_id,
                wire.RelayCode.SESSION_NOT_FOUND,
                "the session ended (DELETE or idle) while the request was in flight",
                retryable=False,
                req_id=self.req_id,
            )
        if trio.current_time() >= call.hard_deadline:
            limit = call.hard_deadline - call.started
            text = f"no complete response within {limit:g} s; request cancelled"
        else:
            text = f"no response within {call.idle or 0:g} s; request cancelled"
        return wire.relay_error(
            call.request_id, wire.RelayCode.TIMEOUT, text, retryable=True, req_id=self.req_id
        )

    def _json(self, body: bytes, status: int = 200) -> Response:
        return streaming_response(_single(body), status, [("content-type", "application/json")])

    def _early_answer(self, error: bytes | None, *, status_if_no_id: int) -> Response:
        """The answer to a call that ended before its head arrived."""
        if error is None:
            # The client cancelled the request itself: an empty event stream that ends at once
            # (a request must be answered with JSON or SSE, never 202).
            return streaming_response(
                _single(b""), 200, [("content-type", "text/event-stream"), *SSE_HEADERS]
            )
        status = 200 if self.call.request_id is not None else status_if_no_id
        return self._json(error, status)

    # -- the exchange --------------------------------------------------------------------------

    async def run(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        *,
        timeout: float | None,
        cleanups: list[Callable[[], None]],
    ) -> tuple[Response, ResponseHead | None]:
        """Relay the exchange; returns the client's response and the provider's head (None if
        the exchange failed before it)."""
        self.start()
        cleanups.append(self.client_left)
        try:
            self.stream = stream = self.agent.session.open_stream(
                method, path, headers, timeout=timeout, end=not body, slot=self.counted
            )
        except TunnelClosed as exc:
            error = self.tunnel_failed(exc)
            return self._json(error, 200 if self.request_id is not None else 503), None
        try:
            with self.call.watch() as scope:
                if body:
                    await stream.send_data(body, end=True)
                head = await stream.receive_response()
        except (StreamReset, TunnelClosed) as exc:
            error = self.tunnel_failed(exc)
            return self._json(error, 200 if self.request_id is not None else 502), None
        if scope.cancelled_caught:
            code = self._stopped_code()
            self.finish(code=code)
            return self._early_answer(self._stopped_error(), status_if_no_id=504), None
        self.status = head.status
        headers_out = wire.response_headers(head.headers)
        if head.end:
            self.finish(failed=False)
            return streaming_response(_single(b""), head.status, headers_out), head
        if is_event_stream(headers_out):
            headers_out = [(k, v) for k, v in headers_out if k != "cache-control"]
            headers_out += SSE_HEADERS
            return streaming_response(self._sse_body(), head.status, headers_out), head
        return await self._whole_body(head.status, headers_out), head

    async def _whole_body(self, status: int, headers: list[tuple[str, str]]) -> Response:
        """A non-SSE answer: one message, read whole within the limit and the call's deadline."""
        assert self.stream is not None
        limit = self.gateway.config.mcp_max_resp_bytes
        parts: list[bytes] = []
        size = 0
        try:
            with self.call.watch() as scope:
                while chunk := await self.stream.receive_some():
                    size += len(chunk)
                    if size > limit:
                        break
                    parts.append(chunk)
        except (StreamReset, TunnelClosed) as exc:
            error = self.tunnel_failed(exc)
            return self._json(error, 200 if self.request_id is not None else 502)
        if scope.cancelled_caught:
            self.finish(code=self._stopped_code())
            return self._early_answer(self._stopped_error(), status_if_no_id=504)
        if size > limit:
            self.finish(code=ResetCode.CANCELLED)
            log.warning(
                "%s: the provider's answer exceeds BROKER_MAX_RESP_BYTES (%d); replaced",
                self.label,
                limit,
            )
            return self._json(self._too_large(limit))
        self.finish(failed=False)
        return Response(b"".join(parts), status=status, headers=Headers(headers))

    def _too_large(self, limit: int) -> bytes:
        return wire.relay_error(
            self.request_id,
            wire.RelayCode.LIMIT_EXCEEDED,
            f"a message from the provider exceeds {limit} bytes",
            retryable=False,
            req_id=self.req_id,
        )

    async def _sse_body(self) -> AsyncIterator[bytes]:
        """The provider's events, verbatim, as they arrive (see the module docstring)."""
        # The cancel scope wraps each receive only, never a yield; GeneratorExit (the client left
        # while we were parked at a yield) runs the finally, which resets the stream.
        stream = self.stream
        assert stream is not None
        limit = self.gateway.config.mcp_max_resp_bytes
        parser = wire.SseParser(limit)
        call = self.call
        try:
            while True:
                with call.watch() as scope:
                    chunk = await stream.receive_some()
                if scope.cancelled_caught:
                    self.finish(code=self._stopped_code())
                    error = self._stopped_error()
                    if error is not None and call.request_id is not None:
                        yield wire.sse_message(error)
                    return
                if not chunk:
                    if parser.pending:
                        yield parser.pending
                    self.finish(failed=False)
                    return
                try:
                    events = parser.feed(chunk)
                except wire.EventTooLarge:
                    self.finish(code=ResetCode.CANCELLED)
                    log.warning("%s: an SSE event exceeds BROKER_MAX_RESP_BYTES", self.label)
                    if call.request_id is not None:
                        yield wire.sse_message(self._too_large(limit))
                    return
                for event in events:
                    if event.is_message:
                        call.touch()
                        if call.stream:
                            self.relay.touch_session(call.session_id)
                    yield event.raw
        except (StreamReset, TunnelClosed) as exc:
            error = self.tunnel_failed(exc)
            if call.request_id is not None:
                yield wire.sse_message(error)
        finally:
            self.client_left()  # a no-op unless the client left mid-stream


async def _single(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body
