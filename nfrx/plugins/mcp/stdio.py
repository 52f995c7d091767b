"""The stdio bridge: a Streamable HTTP server (reached through the tunnel) in front of stdio MCP
provider processes (reference ``mcp.md`` section 7.2).

:class:`StdioBridge` is the ``nfrx mcp`` backend for a stdio provider. It answers each tunnel
stream as a Streamable HTTP provider would; the processes behind it belong to its
:class:`~nfrx.plugins.mcp.stdio_pool.ProcessPool` (one per legacy session plus a warm spare, or one
shared modern process), each a :class:`~nfrx.plugins.mcp.stdio_process.Child`.

* **Legacy** exchanges (``x-nfrx-mcp-era: legacy``): an ``initialize`` without a session takes the
  warm spare under a fresh session id, returned as ``mcp-session-id``; later exchanges carry it.
  An unknown or ended session answers 404 (clients then re-initialize), a missing one 400. GET
  opens the session's stream for messages tied to no request, DELETE stops the process. Past
  ``MCP_STDIO_MAX_PROCESSES`` a new session answers 503.
* **Modern** exchanges: the shared process, if the start-up probe showed a 2026-07-28 provider.
  Otherwise they are answered 400 with a plain ``-32600`` error (never a modern error code), so
  dual-era clients fall back to ``initialize``. Before a modern message reaches the process it
  passes the checks of :mod:`~nfrx.plugins.mcp.modern_validation`; the tool schema its
  ``Mcp-Param-*`` step needs comes from a ``tools/list`` walk the bridge sends the shared process
  with the caller's own envelope (so a caller-scoped catalogue answers exactly what this caller
  sees, and nothing can be stale), only for a ``tools/call`` that has arguments or ``Mcp-Param-*``
  headers; the check is skipped when the listing fails, takes longer than
  :data:`SCHEMA_TIMEOUT` or does not name the tool.

What happens to each message once it reaches its process (id rewriting, the JSON-or-SSE answer,
cancellation) is :mod:`~nfrx.plugins.mcp.stdio_exchange`'s.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

import trio

from nfrx.agent.proxy import Outcome
from nfrx.plugins.mcp import modern_validation, wire
from nfrx.plugins.mcp.modern_validation import Envelope, Rejection
from nfrx.plugins.mcp.stdio_exchange import (
    KEEPALIVE,
    SSE_HEADERS,
    plain_error,
    reply,
    request_idle,
    serve_message,
    serve_request,
    session_not_found,
)
from nfrx.plugins.mcp.stdio_pool import CALL_BUFFER, NoProcess, ProcessPool
from nfrx.plugins.mcp.stdio_process import MAX_LINE, Child, Delivery

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nfrx.agent.runtime import BackendState
    from nfrx.config.model import McpAgentConfig
    from nfrx.protocol import Headers
    from nfrx.transport.streams import IncomingStream

log = logging.getLogger("nfrx.mcp.stdio")

PROBE_INTERVAL: Final = 20.0
CLOSE_GRACE_TOTAL: Final = 5.0
"""Most seconds a DELETE waits for its process to be gone before answering."""
SCHEMA_PAGES: Final = 100
"""Most ``tools/list`` pages walked to find a tool's schema (the SDK's cap)."""
SCHEMA_TIMEOUT: Final = 10.0
"""Most seconds the ``tools/list`` walk for ``Mcp-Param-*`` validation may take (then skipped)."""


class StdioBridge:
    """The ``nfrx mcp`` backend for a stdio provider.

    Run :meth:`run` in a nursery for as long as the agent serves (its pool owns every provider
    process; cancelling it stops them all, bounded); :meth:`probe` and :meth:`handle` are the
    runtime's :class:`~nfrx.agent.runtime.Backend` interface.
    """

    kind = "mcp"

    def __init__(
        self,
        config: McpAgentConfig,
        *,
        args: Sequence[str] | None = None,
        hello_options: Headers = (("transport", "stdio"),),
    ) -> None:
        self.config = config
        self.pool = ProcessPool(config, args)
        self.poll_interval = PROBE_INTERVAL
        self.hello_options = hello_options

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the process pool (see :meth:`ProcessPool.run`)."""
        await self.pool.run(task_status=task_status)

    async def probe(self) -> BackendState:
        """The pool's :meth:`~ProcessPool.readiness`."""
        return await self.pool.readiness()

    def describe(self, agent_id: str) -> str:
        """What the agent serves, for its log lines (an MCP relay has no models)."""
        return f"MCP relay at /api/mcp/id/{agent_id} (stdio provider)"

    # -- the HTTP front ------------------------------------------------------------------------

    async def handle(self, stream: IncomingStream) -> Outcome:
        """Answer one tunnel stream as a Streamable HTTP provider (see the module docstring)."""
        request = stream.request
        headers = {k.lower(): v for k, v in request.headers}
        era = headers.get(wire.Meta.ERA) or wire.era_of(headers.get("mcp-protocol-version"))
        session_id = headers.get("mcp-session-id", "")
        if request.path not in ("", "/"):
            error = wire.relay_error(
                None,
                wire.RelayCode.RELAY_NOT_FOUND,
                "a stdio provider has no such path",
                retryable=False,
            )
            return await reply(stream, 404, error)
        if request.method == "GET":
            return await self._serve_get(stream, era, session_id)
        if request.method == "DELETE":
            return await self._serve_delete(stream, era, session_id)
        if request.method != "POST":
            return await plain_error(stream, 405, "Method Not Allowed", allow="GET, POST, DELETE")
        return await self._serve_post(stream, era, session_id, headers)

    async def _serve_post(
        self, stream: IncomingStream, era: str, session_id: str, headers: dict[str, str]
    ) -> Outcome:
        """One JSON-RPC message: to the process that serves it (answered by the bridge itself
        when none does, or when the message is refused)."""
        try:
            body = await stream.receive_all(MAX_LINE)
        except ValueError:
            return await reply(
                stream,
                413,
                wire.relay_error(
                    None,
                    wire.RelayCode.LIMIT_EXCEEDED,
                    f"the message exceeds {MAX_LINE} bytes",
                    retryable=False,
                    code=wire.INVALID_REQUEST,
                ),
            )
        try:
            message = wire.parse_message(body)
        except wire.InvalidMessage as exc:
            return await reply(stream, 400, wire.jsonrpc_error(None, exc.code, str(exc)))
        if era == wire.MODERN:
            child = await self._modern_child(stream, message, body)
        else:
            child = await self._session_for(stream, message, session_id)
        if child is None:
            return Outcome.ANSWERED
        child.active += 1
        try:
            if message.kind == wire.Kind.REQUEST:
                number = self.pool.next_number()
                idle = request_idle(headers)
                return await serve_request(stream, child, message, body, number=number, idle=idle)
            return await serve_message(stream, child, message, body)
        finally:
            child.active -= 1
            child.last_used = trio.current_time()

    # -- sessions ------------------------------------------------------------------------------

    async def _session_for(
        self, stream: IncomingStream, message: wire.Message, session_id: str
    ) -> Child | None:
        """The session's process (after answering the client itself if there is none)."""
        if session_id:
            child = self.pool.session(session_id)
            if child is None:
                await reply(stream, 404, session_not_found(message.id))
            return child
        if message.kind != wire.Kind.REQUEST or message.method != "initialize":
            await plain_error(
                stream,
                400,
                "Bad Request: missing session (send initialize first)",
                request_id=message.id,
            )
            return None
        try:
            return await self.pool.new_session()
        except NoProcess as exc:
            await reply(
                stream,
                503,
                wire.relay_error(
                    message.id,
                    wire.RelayCode.LIMIT_EXCEEDED
                    if exc.full
                    else wire.RelayCode.PROVIDER_UNAVAILABLE,
                    str(exc),
                    retryable=True,
                ),
                (("retry-after", "5"),) if exc.full else (),
            )
            return None

    async def _modern_child(
        self, stream: IncomingStream, message: wire.Message, body: bytes
    ) -> Child | None:
        """The shared process for a modern message that passed the checks (after answering
        the client itself when there is none or the message is refused)."""
        child = self.pool.shared if self.pool.modern else None
        if child is None or not child.alive:
            await self._not_modern(stream, message)
            return None
        rejection = await self._modern_rejection(child, message, body, stream.request.headers)
        if rejection is not None:
            await reply(stream, rejection.status, rejection.body(message.id))
            return None
        return child

    async def _not_modern(self, stream: IncomingStream, message: wire.Message) -> Outcome:
        await trio.lowlevel.checkpoint()
        if self.pool.modern is None or self.pool.modern:
            reason = self.pool.last_error or "the stdio provider is starting"
            return await reply(
                stream,
                503,
                wire.relay_error(
                    message.id, wire.RelayCode.PROVIDER_UNAVAILABLE, reason, retryable=True
                ),
                (("retry-after", "5"),),
            )
        return await plain_error(
            stream,
            400,
            "Bad Request: missing session; this provider speaks the legacy protocol, "
            "send initialize",
            request_id=message.id,
        )

    async def _serve_get(self, stream: IncomingStream, era: str, session_id: str) -> Outcome:
        if era == wire.MODERN or not session_id:
            return await plain_error(
                stream, 405, "Method Not Allowed: no stream without a session", allow="POST, DELETE"
            )
        child = self.pool.session(session_id)
        if child is None:
            return await reply(stream, 404, session_not_found(None))
        if child.listener is not None:
            return await plain_error(stream, 409, "Conflict: this session already has a GET stream")
        send, receive = trio.open_memory_channel[Delivery](CALL_BUFFER)
        child.listener = send
        child.active += 1
        try:
            async with receive:
                await stream.send_response(200, SSE_HEADERS)
                while True:
                    delivery = None
                    with trio.move_on_after(KEEPALIVE):
                        try:
                            delivery = await receive.receive()
                        except trio.EndOfChannel:
                            break  # the session ended
                    if delivery is None:
                        await stream.send_data(b": keepalive\n\n")
                    else:
                        await stream.send_data(wire.sse_message(delivery.body))
                await stream.end()
        finally:
            if child.listener is send:
                child.listener = None
            child.active -= 1
            child.last_used = trio.current_time()
        return Outcome.ANSWERED

    async def _serve_delete(self, stream: IncomingStream, era: str, session_id: str) -> Outcome:
        if era == wire.MODERN or not session_id:
            return await plain_error(
                stream, 405, "Method Not Allowed: no session to delete", allow="POST"
            )
        child = self.pool.sessions.pop(session_id, None)
        if child is None or not child.alive:
            return await reply(stream, 404, session_not_found(None))
        child.stop("the client deleted its session")
        with trio.move_on_after(CLOSE_GRACE_TOTAL):
            await child.exited.wait()
        await stream.send_response(200, (), end=True)
        return Outcome.ANSWERED

    # -- modern-era validation -----------------------------------------------------------------

    async def _modern_rejection(
        self, child: Child, message: wire.Message, body: bytes, headers: Headers
    ) -> Rejection | None:
        """What the SDK's modern HTTP entry would refuse ``message`` with, or None to relay it
        (the ladder of :mod:`~nfrx.plugins.mcp.modern_validation`, in its order)."""
        pairs = modern_validation.header_pairs(headers)
        decoded = json.loads(body)  # parse_message read it already: valid JSON, an object
        supported = self.pool.modern_versions
        verdict = modern_validation.envelope_verdict(message.kind, decoded, pairs, supported)
        if not isinstance(verdict, Envelope):
            return verdict
        target = modern_validation.param_target(decoded, pairs)
        if target is not None:
            name, arguments = target
            schema = await self._tool_input_schema(child, verdict, name)
            if schema is not None:
                rejection = modern_validation.validate_param_headers(schema, arguments, pairs)
                if rejection is not None:
                    return rejection
        return modern_validation.removed_method(message.method)

    async def _tool_input_schema(self, child: Child, verdict: Envelope, name: str) -> Any:
        """``name``'s ``inputSchema`` from the provider's ``tools/list``, asked with the caller's
        envelope and walked page by page; None (skip the check) when the listing fails, takes
        longer than :data:`SCHEMA_TIMEOUT` or never names the tool."""
        meta: dict[str, Any] = {
            modern_validation.PROTOCOL_VERSION_KEY: verdict.protocol_version,
            modern_validation.CLIENT_CAPABILITIES_KEY: verdict.client_capabilities,
        }
        if verdict.client_info is not None:
            meta[modern_validation.CLIENT_INFO_KEY] = verdict.client_info
        params: dict[str, Any] = {"_meta": meta}
        seen: set[str] = set()
        with trio.move_on_after(SCHEMA_TIMEOUT):
            for _ in range(SCHEMA_PAGES):
                result = await self.pool.ask(child, "tools/list", params)
                if result is None:
                    log.debug("Mcp-Param validation skipped: the tools/list listing failed")
                    return None
                tools = result.get("tools")
                for tool in tools if isinstance(tools, list) else []:
                    if isinstance(tool, dict) and tool.get("name") == name:
                        return tool.get("inputSchema")
                cursor = result.get("nextCursor")
                if not isinstance(cursor, str):
                    return None  # not listed: the provider itself refuses an unknown tool
                if cursor in seen:
                    log.warning("Mcp-Param validation skipped: tools/list returned a cursor cycle")
                    return None
                seen.add(cursor)
                params = {"_meta": meta, "cursor": cursor}
            log.warning("Mcp-Param validation skipped: tools/list ran past %d pages", SCHEMA_PAGES)
            return None
        log.warning("Mcp-Param validation skipped: tools/list took over %g s", SCHEMA_TIMEOUT)
        return None
