"""Relay one HTTP exchange through an agent's tunnel and stream the answer back to the client.

A :class:`Job` is one client request on its way to an agent: it takes a slot (at once, or by
waiting in the :class:`~.dispatch_queue.DispatchQueue`), opens a tunnel stream, sends the body
and waits for the response head. If the agent fails before the head arrived -- it died, drained
away, or reset the stream because its backend is unreachable -- nothing has reached the client
yet, so the job tries another eligible agent (at most ``LLM_MAX_RETRIES`` times, never the same
agent twice). An agent that refuses the stream as ``overloaded`` (the other instances of the
gateway took its slots meanwhile) costs no retry: the request goes back to the front of the queue
and the agent counts as full until it reports its load again. Once the head is back there is no
retry: a failure is a final SSE ``error`` event for event streams and a cut connection otherwise,
never a mixed or duplicated answer.

Ownership and cancellation: the request's ASGI call owns the exchange. Whatever ends it -- the
body fully relayed, the client disconnecting (quart-trio cancels the handler or closes the body
iterator), the deadline, the idle timeout, the agent failing -- :meth:`Exchange.finish` runs
exactly once, resets the stream if it is still live (the agent then cancels its backend request)
and gives the agent's slot back. ``finish`` never blocks, so it is safe in every ``finally`` and
in the app's per-request cleanup, which also covers a client that leaves before the body iterator
was ever started.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import TYPE_CHECKING

import attrs
import trio
from quart import Response
from werkzeug.datastructures import Headers

from nfrx.headers import HOP_BY_HOP
from nfrx.protocol import ResetCode
from nfrx.server.dispatch_queue import QueueFull, Ticket
from nfrx.server.event_stream import EventCutter
from nfrx.server.http_errors import (
    ErrorStyle,
    HttpError,
    from_tunnel_error,
    idle_timeout,
    queue_timeout,
    request_timeout,
    worker_busy,
)
from nfrx.server.upload import Upload
from nfrx.server.usage import UsageMeter
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from nfrx.protocol import Response as ResponseHead
    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord
    from nfrx.server.usage import Usage
    from nfrx.transport.streams import OutgoingStream

log = logging.getLogger("nfrx.proxy")

_RESPONSE_DROP = HOP_BY_HOP | {"set-cookie", "server", "date"}

ERROR_BODY_LIMIT = 64 * 1024
"""How much of an upstream error body is quoted in a final SSE error event."""


class RelayBroken(Exception):
    """A non-event-stream body could not be completed; the client connection must be cut so the
    truncation is visible (never a silently shortened 200)."""


def response_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The agent's response headers minus hop-by-hop and server-owned ones."""
    return [(k, v) for k, v in headers if k.lower() not in _RESPONSE_DROP]


def is_event_stream(headers: list[tuple[str, str]]) -> bool:
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    return content_type.split(";")[0].strip().lower() == "text/event-stream"


@attrs.define(eq=False)
class Exchange:
    """One relayed request on one agent: its stream, and the bookkeeping to undo."""

    gateway: Gateway
    agent: AgentRecord
    model: str
    stream: OutgoingStream
    request_id: str
    label: str
    deadline: float
    started: float = attrs.field(factory=trio.current_time)
    status: int | None = None
    failed: bool = False
    cancelled: bool = False
    """The client gave up (disconnected, or timed out on its side) before the answer ended."""
    usage: Usage | None = None
    ended: float | None = None
    owns_slot: bool = True
    """False when the caller holds the agent's slot across several exchanges (embeddings)."""
    _finished: bool = False

    @property
    def duration(self) -> float:
        """Seconds since the exchange started (fixed once it finished)."""
        end = self.ended if self.ended is not None else trio.current_time()
        return end - self.started

    def finish(
        self, *, code: str = ResetCode.CANCELLED, failed: bool | None = None, refused: bool = False
    ) -> None:
        """End the exchange: reset the stream if it is still live, free the slot. Idempotent.

        ``failed`` says how it ended. Left out while the stream is still live, the exchange
        was cut from the client's side -- quart-trio cancelled the request or closed its body
        iterator because the client left -- and counts as cancelled, not as the agent's
        failure. ``refused``: the agent turned the stream down as overloaded before it started;
        the slot comes back uncounted and nobody hears of the exchange.
        """
        if self._finished:
            return
        self._finished = True
        self.ended = trio.current_time()
        if self.stream.live:
            self.stream.reset(code)
            if failed is None:
                self.cancelled = True
        if failed is not None:
            self.failed = failed
        if refused:
            if self.owns_slot:
                self.gateway.registry.release(self.agent, counted=False)
            log.debug("%s agent=%s: overloaded, requeued", self.label, self.agent.name)
            return
        if self.owns_slot:
            self.gateway.registry.release(self.agent, failed=self.failed, cancelled=self.cancelled)
        if self.usage is not None:
            self.gateway.record_usage(self.agent, self.model, self.usage)
        self.gateway.exchange_finished(self)
        if self.cancelled:
            ending = " (cancelled by client)"
        elif self.failed and self.status is not None:
            ending = " (failed)"  # after its head arrived: the answer was cut or unusable
        else:
            ending = ""
        log.info(
            "%s agent=%s status=%s duration=%.3fs%s request_id=%s%s",
            self.label,
            self.agent.name,
            self.status if self.status is not None else "-",
            self.duration,
            ""
            if self.usage is None
            else f" tokens_in={self.usage.input_tokens} tokens_out={self.usage.output_tokens}",
            self.request_id,
            ending,
        )


class _Retry(Exception):
    """The attempt failed before any byte reached the client; another agent may take it."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(error.message)
        self.error = error


@attrs.define(eq=False, kw_only=True)
class Job:
    """One client request: dispatch (with queueing and retries), then the relayed answer."""

    gateway: Gateway
    ticket: Ticket
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | Upload
    """The whole body, or an upload streamed from the client (retried only while replayable)."""
    request_id: str
    label: str
    style: ErrorStyle = "openai"
    rewrite: Callable[[bytes, str], bytes] | None = None
    """Rewrites the body for an agent that knows the model under another name (alias match)."""
    deadline: float = attrs.field(init=False)
    retries_left: int = attrs.field(init=False)
    _wait_started: float | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        config = self.gateway.config
        self.deadline = trio.current_time() + config.request_timeout
        self.retries_left = config.llm_max_retries

    @classmethod
    def relay(
        cls,
        gateway: Gateway,
        ticket: Ticket,
        *,
        path: str,
        body: bytes | Upload,
        label: str,
        cleanups: list[Callable[[], None]],
        style: ErrorStyle = "openai",
        rewrite: Callable[[bytes, str], bytes] | None = None,
    ) -> Job:
        """The job for the current client request: POST ``path`` with ``body``, the client's
        forwarded headers, and the ticket's place in the queue given up when the request ends."""
        cleanups.append(functools.partial(gateway.queue.abandon, ticket))
        return cls(
            gateway=gateway,
            ticket=ticket,
            method="POST",
            path=path,
            headers=gateway.forwarded_headers(ticket.request_id),
            body=body,
            request_id=ticket.request_id,
            label=label,
            style=style,
            rewrite=rewrite,
        )

    # -- dispatch ------------------------------------------------------------------------------

    def grant_now(self) -> tuple[AgentRecord, str] | None:
        """A slot at once, or None after joining the queue. Raises the ticket's ``missing`` error
        (404) when no agent could ever serve it, or 503 ``worker_busy`` when it cannot wait."""
        queue = self.gateway.queue
        grant = queue.try_now(self.ticket)
        if grant is not None:
            return grant
        capacity = self.gateway.config.llm_queue_size
        try:
            if capacity == 0:
                raise QueueFull
            queue.enqueue(self.ticket)
        except QueueFull as exc:
            raise worker_busy(capacity) from exc
        self._wait_started = trio.current_time()
        return None

    def queue_deadline(self) -> float:
        started = self._wait_started if self._wait_started is not None else trio.current_time()
        return min(self.deadline, started + self.gateway.config.llm_queue_timeout)

    async def wait(self, until: float = math.inf) -> tuple[AgentRecord, str] | None:
        """Wait in the queue until granted (returned), ``until`` (None), or a limit (raised)."""
        ticket = self.ticket
        queue = self.gateway.queue
        limit = self.queue_deadline()
        try:
            with trio.move_on_at(min(until, limit)):
                await ticket.done.wait()
        except BaseException:
            queue.abandon(ticket)
            raise
        if ticket.done.is_set():
            grant, error = ticket.granted, ticket.error
            ticket.granted, ticket.error, ticket.done = None, None, trio.Event()
            if error is not None:
                raise error
            return grant
        config = self.gateway.config
        if trio.current_time() >= self.deadline:
            queue.abandon(ticket)
            raise request_timeout(config.request_timeout)
        if trio.current_time() >= limit:
            queue.abandon(ticket)
            raise queue_timeout(config.llm_queue_timeout)
        return None

    def position(self) -> int:
        return self.gateway.queue.position(self.ticket)

    # -- one attempt ---------------------------------------------------------------------------

    async def attempt(
        self, grant: tuple[AgentRecord, str], cleanups: list[Callable[[], None]]
    ) -> tuple[Exchange, ResponseHead]:
        """Send the request to the granted agent and wait for its response head.

        Raises :class:`_Retry` when another agent should take it, :class:`HttpError` when the
        client must be told.
        """
        agent, concrete = grant
        body = self.body
        renamed = concrete != self.ticket.model
        if isinstance(body, Upload):
            # An upload's routing field is renamed as it is replayed from the spool.
            body.replacement = concrete.encode() if renamed else None
        elif renamed and self.rewrite is not None:
            body = self.rewrite(body, concrete)
        try:
            return await self.open(agent, concrete, body, cleanups)
        except AttemptFailed as failure:
            if failure.busy:  # no retry spent: the agent stays eligible, the request waits
                raise _Retry(failure.error) from failure
            if not failure.retryable:
                raise failure.error from failure
            raise self._retry_or_fail(agent, failure.error) from failure

    async def open(
        self,
        agent: AgentRecord,
        concrete: str,
        body: bytes | Upload,
        cleanups: list[Callable[[], None]],
        *,
        note: str = "",
        owns_slot: bool = True,
    ) -> tuple[Exchange, ResponseHead]:
        """:func:`open_exchange` for this job's request with ``body``."""
        return await open_exchange(
            self.gateway,
            agent,
            concrete,
            method=self.method,
            path=self.path,
            headers=self.headers,
            body=body,
            deadline=self.deadline,
            request_id=self.request_id,
            label=self.label + note,
            cleanups=cleanups,
            owns_slot=owns_slot,
        )

    def _retry_or_fail(self, agent: AgentRecord, error: HttpError) -> Exception:
        if self.retries_left <= 0:
            return error
        self.retries_left -= 1
        log.warning(
            "%s: agent %s failed before answering (%s); retrying elsewhere",
            self.label,
            agent.name,
            error.code,
        )
        self.ticket.exclude = self.ticket.exclude | {agent.id}
        self.ticket.missing = lambda: error
        return _Retry(error)

    def retry_grant(self) -> tuple[AgentRecord, str] | None:
        """After a :class:`_Retry`: a slot on another agent now, or None after queueing first
        in line (a retried request has waited its turn already)."""
        grant = self.gateway.queue.try_now(self.ticket)
        if grant is None:
            self.gateway.queue.enqueue(self.ticket, front=True)
            self._wait_started = trio.current_time()
        return grant

    async def start(
        self,
        cleanups: list[Callable[[], None]],
        grant: tuple[AgentRecord, str] | None = None,
    ) -> tuple[Exchange, ResponseHead]:
        """Dispatch (unless ``grant`` is a slot already taken), queue and retry until a response
        head arrived. Raises :class:`HttpError` for the client."""
        if grant is None:
            grant = self.grant_now()
        while True:
            while grant is None:
                grant = await self.wait()
            try:
                return await self.attempt(grant, cleanups)
            except _Retry:
                grant = self.retry_grant()

    # -- answers -------------------------------------------------------------------------------

    def response_parts(
        self, exchange: Exchange, head: ResponseHead
    ) -> tuple[list[tuple[str, str]], bool]:
        headers = response_headers(head.headers)
        event_stream = is_event_stream(headers)
        if event_stream:
            # The relay may end the stream with an error event of its own: no content-length.
            headers = [
                (k, v) for k, v in headers if k.lower() not in ("cache-control", "content-length")
            ]
            headers.append(("Cache-Control", "no-store"))
        headers.append(("X-Request-Id", self.request_id))
        return headers, event_stream

    def response(self, exchange: Exchange, head: ResponseHead) -> Response:
        """The agent's answer passed through to the client as it streams in, or at once when
        all of it came with the head (a small answer: one ASGI body message, no generator)."""
        headers, event_stream = self.response_parts(exchange, head)
        body = b"" if head.end else exchange.stream.buffered_body()
        if body is None:
            return streaming_response(
                self.answer(exchange, head, event_stream), head.status, headers
            )
        meter = UsageMeter(event_stream=event_stream)
        meter.feed(body)
        exchange.usage = meter.usage
        exchange.finish(failed=False)
        return Response(body, status=head.status, headers=Headers(headers))

    def answer(
        self, exchange: Exchange, head: ResponseHead, event_stream: bool
    ) -> AsyncIterator[bytes]:
        """The response body to hand to Quart."""
        if head.end:
            exchange.finish(failed=False)
            return _empty()
        return relay_body(exchange, event_stream, self.style, self.gateway.config.llm_idle_timeout)

    async def queued_event_stream(
        self, cleanups: list[Callable[[], None]], *, named: bool = False
    ) -> AsyncIterator[bytes]:
        """The body of a streaming request that had to wait: ``nfrx.queue`` updates while it waits
        (at once, then every ``LLM_QUEUE_UPDATE_SECONDS``), then the agent's event stream. The
        updates are SSE comments, or named events with ``named`` (see :meth:`queue_event`).

        The status line (200) has been sent, so every later failure -- queue timeout, upstream
        error status, agent failure -- is a final SSE ``error`` event.
        """
        every = self.gateway.config.llm_queue_update_seconds
        grant: tuple[AgentRecord, str] | None = None
        try:
            while True:  # until a response head arrived
                while grant is None:
                    yield self.queue_event(named=named)
                    until = trio.current_time() + every if every > 0 else math.inf
                    grant = await self.wait(until)
                try:
                    exchange, head = await self.attempt(grant, cleanups)
                except _Retry:
                    grant = self.retry_grant()
                    continue
                break
        except HttpError as error:
            yield error.sse_event(self.style)
            return
        finally:
            # Still queued when the client left (GeneratorExit at a yield): leave the line.
            self.gateway.queue.abandon(self.ticket)
        _, event_stream = self.response_parts(exchange, head)
        if head.status == 200 and event_stream:
            async for chunk in self.answer(exchange, head, event_stream):
                yield chunk
            return
        # The backend refused (or did not stream): its status can no longer be sent as the
        # status line, so it is reported, with its body, in the final event.
        quoted = await read_bounded(exchange, ERROR_BODY_LIMIT)
        yield upstream_error_event(head.status, quoted, self.style)

    def queue_event(self, *, named: bool = False) -> bytes:
        """The request's place in the queue as an SSE comment (``: nfrx.queue {...}``), which
        every SSE client skips, or with ``named`` as the original's ``event: nfrx.queue``, which
        SDKs that read every event as a chunk (the openai SDK) turn into a chunk without
        ``choices``. Either way the JSON is the same (one line: compact JSON has no newline)."""
        payload = _json(
            {
                "type": "nfrx.queue",
                "request_id": self.request_id,
                "model": self.ticket.model,
                "position": self.position(),
            }
        )
        if named:
            return b"event: nfrx.queue\ndata: " + payload + b"\n\n"
        return b": nfrx.queue " + payload + b"\n\n"


class AttemptFailed(Exception):
    """An exchange failed before its response head arrived (the slot is released by then)."""

    def __init__(self, error: HttpError, *, retryable: bool, busy: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.retryable = retryable
        """Nothing came back, so another agent may take the request."""
        self.busy = busy
        """The agent was full (``overloaded``): the request waits for a slot again, first in
        line, without spending a retry (the slot came back uncounted)."""


async def open_exchange(
    gateway: Gateway,
    agent: AgentRecord,
    concrete: str,
    *,
    method: str,
    path: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes | Upload,
    deadline: float,
    request_id: str,
    label: str,
    cleanups: list[Callable[[], None]],
    owns_slot: bool = True,
    slot: bool = True,
) -> tuple[Exchange, ResponseHead]:
    """Open a stream to ``agent`` (whose slot the caller took), send the request and wait for the
    response head, within ``deadline`` and the idle timeout. Raises :class:`AttemptFailed`.
    ``slot=False``: a lookup that holds none of the agent's slots (never refused as overloaded).

    An :class:`Upload` body is streamed as the client sends it, paced by the stream's credit;
    past ``MAX_UPLOAD_BYTES`` the stream is reset and the client answered 413. Once bytes past
    its spool were sent, a failure is not retryable (they cannot be sent again).
    """
    config = gateway.config
    streamed = isinstance(body, Upload)
    heard = agent.heard  # what the agent said before this stream: see AgentRegistry.saturate
    try:
        stream = agent.session.open_stream(
            method,
            path,
            headers,
            timeout=max(deadline - trio.current_time(), 0.001),
            end=not streamed and not body,
            slot=slot,
        )
    except TunnelClosed as exc:
        if owns_slot:
            gateway.registry.release(agent, failed=True)
        raise AttemptFailed(from_tunnel_error(exc, request_id), retryable=True) from exc
    exchange = Exchange(
        gateway,
        agent,
        concrete,
        stream,
        request_id,
        f"{label} model={concrete}",
        deadline,
        owns_slot=owns_slot,
    )
    cleanups.append(exchange.finish)
    idle = config.llm_idle_timeout
    try:
        with trio.CancelScope(deadline=deadline) as total:
            if isinstance(body, Upload):
                await body.send(stream)
            elif body:
                await stream.send_data(body, end=True)
            with trio.move_on_after(idle) as quiet:
                head = await stream.receive_response()
    except HttpError as refused:  # the upload went over MAX_UPLOAD_BYTES
        exchange.status = refused.status
        exchange.finish(failed=False)
        raise AttemptFailed(refused, retryable=False) from refused
    except (StreamReset, TunnelClosed) as exc:
        error = from_tunnel_error(exc, request_id)
        replayable = not isinstance(body, Upload) or body.replayable
        if isinstance(exc, StreamReset) and exc.code == ResetCode.OVERLOADED and replayable:
            exchange.finish(failed=False, refused=True)
            gateway.registry.saturate(agent, heard)
            raise AttemptFailed(error, retryable=True, busy=True) from exc
        log.warning(
            "%s: agent %s failed before answering: %s request_id=%s",
            exchange.label,
            agent.name,
            error.detail,
            request_id,
        )
        exchange.status = error.status
        exchange.finish(failed=True)
        timed_out = isinstance(exc, StreamReset) and exc.code == ResetCode.TIMEOUT
        raise AttemptFailed(error, retryable=not timed_out and replayable) from exc
    if total.cancelled_caught or quiet.cancelled_caught:
        exchange.status = 504
        exchange.finish(code=ResetCode.TIMEOUT, failed=True)
        late = (
            request_timeout(config.request_timeout)
            if total.cancelled_caught
            else idle_timeout(idle)
        )
        raise AttemptFailed(late, retryable=False)
    exchange.status = head.status
    return exchange, head


def streaming_response(
    body: AsyncIterator[bytes], status: int, headers: list[tuple[str, str]]
) -> Response:
    """A Quart response for a relayed body. Its deadline is nfrx's own (REQUEST_TIMEOUT, the
    idle timeout): Quart's 60 s default would cut long generations and conversions."""
    response = Response(body, status=status, headers=Headers(headers))
    response.timeout = None
    return response


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover -- makes this an async generator


async def read_bounded(exchange: Exchange, limit: int) -> bytes:
    """Up to ``limit`` bytes of the response body (the rest is abandoned); never raises."""
    parts: list[bytes] = []
    size = 0
    try:
        with trio.move_on_at(trio.current_time() + 10):
            while size < limit:
                chunk = await exchange.stream.receive_some()
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
    except (StreamReset, TunnelClosed):
        pass
    exchange.finish(failed=True)
    return b"".join(parts)[:limit]


def upstream_error_event(status: int, body: bytes, style: ErrorStyle) -> bytes:
    try:
        quoted: object = json.loads(body)
    except ValueError:
        quoted = body.decode("utf-8", "replace")
    error = HttpError(
        status if status >= 400 else 502,
        "upstream_status",
        f"the backend answered HTTP {status} after the request had waited in the queue",
    )
    return error.sse_event(style, extra={"status": status, "body": quoted})


async def relay_body(
    exchange: Exchange, event_stream: bool, style: ErrorStyle, idle: float
) -> AsyncIterator[bytes]:
    """The agent's response body, chunk by chunk, with the deadline and idle timeout applied.

    An event stream goes out in whole events (:class:`EventCutter`), so that a final error
    event never lands inside a half-sent one.
    """
    # The cancel scope wraps each receive only, never a yield (structured concurrency in an async
    # generator); GeneratorExit (client gone while we were parked at yield) runs the finally.
    stream = exchange.stream
    meter = UsageMeter(event_stream=event_stream)
    cutter = EventCutter() if event_stream else None
    deadline = exchange.deadline
    try:
        while True:
            with trio.move_on_at(min(deadline, trio.current_time() + idle)) as scope:
                chunk = await stream.receive_some()
            if scope.cancelled_caught:
                exchange.usage = meter.usage
                exchange.finish(code=ResetCode.TIMEOUT, failed=True)
                config = exchange.gateway.config
                error = (
                    request_timeout(config.request_timeout)
                    if trio.current_time() >= deadline
                    else idle_timeout(idle)
                )
                if cutter is not None:
                    yield _final_event(cutter, error.sse_event(style))
                    return
                raise RelayBroken(error.message)
            if not chunk:
                exchange.usage = meter.usage
                exchange.finish(failed=False)
                if cutter is not None and (rest := cutter.rest()):
                    yield rest
                return
            meter.feed(chunk)
            if cutter is None:
                yield chunk
            elif whole := cutter.feed(chunk):
                yield whole
    except (StreamReset, TunnelClosed) as exc:
        exchange.usage = meter.usage
        exchange.finish(failed=True)
        error = from_tunnel_error(exc, exchange.request_id)
        log.warning(
            "%s agent=%s: the answer broke off: %s request_id=%s",
            exchange.label,
            exchange.agent.name,
            error.detail,
            exchange.request_id,
        )
        if cutter is None:
            raise RelayBroken(error.message) from exc
        yield _final_event(cutter, error.sse_event(style))
    finally:
        exchange.finish()


def _final_event(cutter: EventCutter, event: bytes) -> bytes:
    """``event`` as the last bytes of a failed event stream: the held incomplete event dropped,
    and a blank line first if the client is inside an event already (one let out unfinished)."""
    cutter.drop()
    return b"\n\n" + event if cutter.mid_event else event
