"""One exchange of the stdio bridge with a provider process: a client's request or message.

:func:`serve_request` relays a JSON-RPC request. Its id is rewritten to an agent-unique
``"nfrx-<n>"`` (a progress token to ``"nfrx-p-<n>"``) and restored to the client's exact JSON
text on the way back: the bridge splices only those members (:mod:`.splice`), all other bytes
pass as written. The bridge then waits up to :data:`JSON_DEFER` for the first message for the
request. If it is the response, the answer is ``application/json``; otherwise
``text/event-stream`` is committed and every message is one ``event: message`` event, with
``: keepalive`` comments every :data:`KEEPALIVE` seconds, until the response ends the stream.

:func:`serve_message` writes a notification or a client response to the process and answers 202.
``notifications/cancelled`` from a client has its ``requestId`` mapped like an id; one for a
request not in flight is not written (its id would mean nothing, or someone else's request, to
the process).

Cancellation: when a request's handler is cancelled (the server reset the stream: client gone,
call timeout, DELETE, drain; or the tunnel ended; or ``Open.timeout``) or the bridge's own
inactivity limit (``x-nfrx-mcp-idle`` + :data:`IDLE_MARGIN`, :func:`request_idle`) passes before
the response, the id is retired (nothing more for it reaches anyone) and
``notifications/cancelled`` with the id the process saw is written, shielded and bounded by
:data:`~nfrx.plugins.mcp.stdio_pool.CANCEL_GRACE`. ``initialize`` is never cancelled: its
process is stopped instead. The process exiting under a request answers it
``MCP_PROVIDER_UNAVAILABLE`` (as JSON, or as the last SSE event).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Final

import trio

from nfrx.agent.proxy import Outcome
from nfrx.plugins.mcp import modern_validation, splice, wire
from nfrx.plugins.mcp.stdio_pool import CALL_BUFFER, CANCEL_GRACE, cancelled_line
from nfrx.plugins.mcp.stdio_process import ID, REQUEST_ID, TOKEN, Call, Delivery
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from nfrx.plugins.mcp.stdio_process import Child
    from nfrx.protocol import Headers
    from nfrx.transport.streams import IncomingStream

JSON_DEFER: Final = 1.0
"""Seconds a request's answer may stay undecided between JSON and SSE."""
KEEPALIVE: Final = 15.0
IDLE_MARGIN: Final = 5.0
"""Seconds past the server's inactivity limit before the bridge gives up on its own."""

JSON_HEADERS: Final = (("content-type", "application/json"),)
SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)


async def serve_message(
    stream: IncomingStream, child: Child, message: wire.Message, body: bytes
) -> Outcome:
    """A notification or a client response: write it (rewritten if need be), answer 202."""
    line: bytes | None = body
    if message.kind == wire.Kind.RESPONSE:
        assert message.id is not None
        if message.id not in child.server_requests:
            if child.shared:
                return await plain_error(
                    stream, 400, "Bad Request: no request from the provider has this id"
                )
        else:
            owner = child.server_requests.pop(message.id)
            if owner is not None:
                owner.bump()  # the client's answer is activity of the waiting request
    elif message.method == "notifications/cancelled":
        line = _client_cancel(child, message, body)
    if line is not None and not await child.write(line):
        return await reply(stream, 404, session_not_found(None))
    await stream.send_response(202, (), end=True)
    return Outcome.ANSWERED


def _client_cancel(child: Child, message: wire.Message, body: bytes) -> bytes | None:
    """The client cancels one of its requests: the line for the process, or None."""
    call = child.by_client.get(message.cancelled_id or "") if not child.shared else None
    if call is None or not child.retire(call):
        return None  # not in flight here (or shared: ids are not unique across clients)
    call.end = "cancelled"
    call.channel.close()
    return _rewrite(body, {REQUEST_ID: json.dumps(call.upstream_id)})


async def serve_request(
    stream: IncomingStream,
    child: Child,
    message: wire.Message,
    body: bytes,
    *,
    number: int,
    idle: float,
) -> Outcome:
    """A client request: written with its ids rewritten (``number`` unique to it, see the
    module docstring), answered by :func:`_answer` within ``idle`` seconds of provider silence;
    an abandoned one is cancelled at the process (``initialize``: the process is stopped)."""
    assert message.id is not None
    n = number
    upstream = f"nfrx-{n}"
    token = f"nfrx-p-{n}" if message.progress_token is not None else None
    values: dict[splice.Path, str] = {ID: json.dumps(upstream)}
    if token is not None:
        values[TOKEN] = json.dumps(token)
    line = _rewrite(body, values)
    send, receive = trio.open_memory_channel[Delivery](CALL_BUFFER)
    call = Call(
        message.id,
        upstream,
        message.method,
        send,
        idle=idle,
        client_token=message.progress_token,
        upstream_token=token,
    )
    child.register(call)
    answered = False
    try:
        async with receive:
            if not await child.write(line):
                call.end = "exited"
                send.close()
            answered = await _answer(stream, child, call, receive)
    finally:
        if not answered and child.retire(call):
            if message.method == "initialize":
                child.stop("its initialize was abandoned")
            else:
                reason = _cancel_reason(stream)
                with trio.move_on_after(CANCEL_GRACE, shield=True):
                    await child.write(cancelled_line(upstream, reason))
    return Outcome.BROKEN if call.end == "exited" else Outcome.ANSWERED


async def _answer(
    stream: IncomingStream,
    child: Child,
    call: Call,
    receive: trio.MemoryReceiveChannel[Delivery],
) -> bool:
    """Relay the process's messages for ``call``; True once its response was delivered."""
    head = (("mcp-session-id", child.session_id),) if child.session_id else ()
    committed = False
    decide_by = trio.current_time() + JSON_DEFER
    keepalive_at = math.inf
    while True:
        delivery: Delivery | None = None
        with trio.move_on_at(min(call.deadline, keepalive_at if committed else decide_by)):
            try:
                delivery = await receive.receive()
            except trio.EndOfChannel:
                return await _ended(stream, call, committed, child)
        now = trio.current_time()
        if delivery is None:
            if now >= call.deadline:
                body = wire.relay_error(
                    call.client_id,
                    wire.RelayCode.TIMEOUT,
                    f"the provider sent nothing for {call.idle:g} s",
                    retryable=True,
                )
                await _final(stream, body, committed, (*JSON_HEADERS, *head))
                return False
            if not committed:
                await stream.send_response(200, (*SSE_HEADERS, *head))
                committed = True
            else:
                await stream.send_data(b": keepalive\n\n")
            keepalive_at = trio.current_time() + KEEPALIVE
            continue
        if delivery.final and not committed:
            status = modern_validation.modern_status(delivery.body) if child.shared else 200
            await stream.send_response(status, (*JSON_HEADERS, *head))
            await stream.send_data(delivery.body, end=True)
            return True
        if not committed:
            await stream.send_response(200, (*SSE_HEADERS, *head))
            committed = True
        await stream.send_data(wire.sse_message(delivery.body), end=delivery.final)
        if delivery.final:
            return True
        call.bump()
        keepalive_at = trio.current_time() + KEEPALIVE


async def _ended(stream: IncomingStream, call: Call, committed: bool, child: Child) -> bool:
    """The call's channel closed before its response: the process exited, or the client
    cancelled it (then the stream just ends)."""
    if call.end == "cancelled":
        stream.reset(ResetCode.CANCELLED, "the client cancelled the request")
        return False
    body = wire.relay_error(
        call.client_id,
        wire.RelayCode.PROVIDER_UNAVAILABLE,
        child.exit_reason or "the provider process exited",
        retryable=True,
    )
    await _final(stream, body, committed, JSON_HEADERS)
    return False


async def _final(stream: IncomingStream, body: bytes, committed: bool, headers: Headers) -> None:
    """A relay error for a request: the JSON answer, or the last SSE event."""
    if committed:
        await stream.send_data(wire.sse_message(body), end=True)
    else:
        await stream.send_response(200, headers)
        await stream.send_data(body, end=True)


async def reply(stream: IncomingStream, status: int, body: bytes, extra: Headers = ()) -> Outcome:
    """A JSON answer the bridge gives itself."""
    await stream.send_response(status, (*JSON_HEADERS, *extra))
    await stream.send_data(body, end=True)
    return Outcome.ANSWERED


async def plain_error(
    stream: IncomingStream,
    status: int,
    text: str,
    *,
    request_id: str | None = None,
    allow: str = "",
) -> Outcome:
    """A plain ``-32600`` answer, as a Streamable HTTP provider gives one (``Allow`` for 405)."""
    extra = (("allow", allow),) if allow else ()
    error = wire.jsonrpc_error(request_id, wire.INVALID_REQUEST, text)
    return await reply(stream, status, error, extra)


def session_not_found(request_id: str | None) -> bytes:
    return wire.relay_error(
        request_id,
        wire.RelayCode.SESSION_NOT_FOUND,
        "session not found (it ended or never existed); send initialize to start a new one",
        retryable=False,
        code=wire.INVALID_REQUEST,
    )


def request_idle(headers: dict[str, str]) -> float:
    """The bridge's own inactivity limit for a request (inf: none), from the server's
    ``x-nfrx-mcp-idle`` (``headers`` keyed by lower-case name)."""
    raw = headers.get(wire.Meta.IDLE)
    try:
        idle = float(raw) if raw is not None else math.inf
    except ValueError:
        return math.inf
    return idle + IDLE_MARGIN if math.isfinite(idle) and idle > 0 else math.inf


def _rewrite(body: bytes, values: dict[splice.Path, str]) -> bytes:
    spans = splice.locate(body, values.keys())
    return splice.splice(body, {span: values[path].encode() for path, span in spans.items()})


def _cancel_reason(stream: IncomingStream) -> str:
    failure = stream.failure
    if isinstance(failure, StreamReset):
        if failure.code == ResetCode.TIMEOUT:
            return "nfrx: the call timed out"
        if failure.code == wire.CLIENT_CANCELLED:
            return "nfrx: the client cancelled the request"
        return f"nfrx: the request was abandoned ({failure.code})"
    if isinstance(failure, TunnelClosed):
        return "nfrx: the relay lost its tunnel to the server"
    return "nfrx: the call reached its time limit"
