"""The stdio bridge: a Streamable HTTP server (reached through the tunnel) in front of stdio MCP
provider processes (reference ``mcp.md`` section 7.2).

* **Legacy** exchanges (``x-nfrx-mcp-era: legacy``): one process per session. An ``initialize``
  without a session takes the warm spare (a new spare starts in the background), gets a fresh
  session id (``secrets.token_urlsafe``) returned as ``mcp-session-id``; later exchanges carry it.
  An unknown or ended session answers 404 (clients then re-initialize), a missing one 400. GET
  opens the session's stream for messages tied to no request, DELETE stops the process. Past
  ``MCP_STDIO_MAX_PROCESSES`` a new session answers 503; a session unused for
  ``MCP_SESSION_IDLE`` is stopped.
* **Modern** exchanges: one shared process, if a ``server/discover`` probe at start-up showed a
  2026-07-28 provider. Otherwise they are answered 400 with a plain ``-32600`` error (never a
  modern error code), so dual-era clients fall back to ``initialize``.

Modern-era HTTP validation: for a stdio provider the bridge *is* the Streamable HTTP server, so
before a modern message reaches the process it runs the checks the ``mcp`` SDK 2.3.0's modern HTTP
entry (``mcp/server/_streamable_http_modern.py`` with ``mcp/shared/inbound.py``) runs, in the same
order with the same status, code and message, re-implemented here (the relay never imports the
SDK): a notification naming a version the provider does not serve is ``400``/``-32022``; for a
request, a routing header (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``) sent twice is
``-32020``, then the envelope ladder (``params._meta`` carries the version and the client
capabilities, else ``-32602``; ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` equal the
body, else ``-32020``; the version is one the provider serves, else ``-32022`` with
``data.supported``), then a ``tools/call``'s ``Mcp-Param-*`` headers against the tool's
``x-mcp-header`` annotations (``-32020``), then the methods 2026-07-28 removed
(:data:`REMOVED_METHODS`) are ``404``/``-32601`` (over stdio the SDK answers ``initialize`` with
``-32022`` instead). The
"supported" versions are the modern ones the provider's ``server/discover`` named. The tool's
schema comes, as in the SDK, from a ``tools/list`` walk made for that call with the caller's own
envelope (so a caller-scoped catalogue answers exactly what this caller sees, and nothing can be
stale); the bridge sends it to the shared process itself, only for a ``tools/call`` that has
arguments or ``Mcp-Param-*`` headers, and skips the check (fail-open, like the SDK) when the
listing fails, times out (:data:`SCHEMA_TIMEOUT`) or does not name the tool. Not mirrored: the
SDK's ``Accept`` checks (``406``), because the HTTP agent always sends the provider its own
``Accept``, so a relayed HTTP provider never makes them either. Valid messages pass unchanged.

Every client request id is rewritten to an agent-unique ``"nfrx-<n>"`` (progress tokens to
``"nfrx-p-<n>"``) and restored to the client's exact JSON text on the way back: the bridge splices
only those members (:mod:`.splice`), all other bytes pass as written. ``notifications/cancelled``
from a client has its ``requestId`` mapped the same way; one for a request not in flight is not
written (its id would mean nothing, or someone else's request, to the process).

Responses: the bridge waits up to :data:`JSON_DEFER` for the first message of a request. If it is
the response, the answer is ``application/json``; otherwise ``text/event-stream`` is committed and
every message is one ``event: message`` event, with ``: keepalive`` comments every
:data:`KEEPALIVE` seconds, until the response ends the stream. Notifications and client responses
are written to the process and answered 202.

Cancellation: when a request's handler is cancelled (the server reset the stream: client gone,
call timeout, DELETE, drain; or the tunnel ended; or ``Open.timeout``) or the bridge's own
inactivity limit (``x-nfrx-mcp-idle`` + :data:`IDLE_MARGIN`) passes before the response, the id
is retired (nothing more for it reaches anyone) and ``notifications/cancelled`` with the id the
process saw is written. ``initialize`` is never cancelled: its process is stopped instead.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.agent.proxy import Outcome
from nfrx.agent.runtime import BackendState, BackendUnavailable
from nfrx.plugins.mcp import splice, wire
from nfrx.plugins.mcp.stdio_process import (
    ID,
    MAX_LINE,
    REQUEST_ID,
    TOKEN,
    Call,
    Child,
    Delivery,
    SpawnFailed,
    build_env,
)
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from nfrx.config.model import McpAgentConfig
    from nfrx.protocol import Headers
    from nfrx.transport.streams import IncomingStream

log = logging.getLogger("nfrx.mcp.stdio")

PROBE_INTERVAL: Final = 20.0
JSON_DEFER: Final = 1.0
"""Seconds a request's answer may stay undecided between JSON and SSE."""
KEEPALIVE: Final = 15.0
IDLE_MARGIN: Final = 5.0
"""Seconds past the server's inactivity limit before the bridge gives up on its own."""
DISCOVER_TIMEOUT: Final = 10.0
SPARE_WAIT: Final = 30.0
"""Most seconds an ``initialize`` waits for a spare process that is still starting."""
CANCEL_GRACE: Final = 2.0
CLOSE_GRACE_TOTAL: Final = 5.0
"""Most seconds a DELETE waits for its process to be gone before answering."""
CALL_BUFFER: Final = 32
"""Messages queued for one exchange before the process's reader waits for that client."""
RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits between attempts to start a provider that keeps failing."""

JSON_HEADERS: Final = (("content-type", "application/json"),)
SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
)
MODERN_ERROR_STATUS: Final = {-32700: 400, -32600: 400, -32602: 400, -32601: 404}
"""HTTP status of a modern JSON error answer (the spec's table; the 2026 codes -32020..-32022
are 400 too), as a Streamable HTTP provider would send it."""

METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
HEADER_MISMATCH: Final = -32020
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
REMOVED_METHODS: Final = frozenset(
    {"initialize", "logging/setLevel", "ping", "resources/subscribe", "resources/unsubscribe"}
)
"""Spec methods of earlier revisions that 2026-07-28 no longer has (the SDK's version gate:
``SPEC_CLIENT_METHODS`` minus those with a 2026-07-28 schema); the HTTP entry answers them 404."""
NAME_BEARING_METHODS: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Method -> the ``params`` member ``Mcp-Name`` mirrors."""
ROUTING_HEADERS: Final = frozenset({"mcp-protocol-version", "mcp-method", "mcp-name"})
MCP_PARAM_PREFIX: Final = "Mcp-Param-"
SCHEMA_PAGES: Final = 100
"""Most ``tools/list`` pages walked to find a tool's schema (the SDK's cap)."""
SCHEMA_TIMEOUT: Final = 10.0
"""Most seconds the ``tools/list`` walk for ``Mcp-Param-*`` validation may take (then skipped)."""


def provider_argv(config: McpAgentConfig, args: Sequence[str] | None = None) -> list[str]:
    """The command line: ``MCP_STDIO_COMMAND`` (absolute, unless ``MCP_STDIO_ALLOW_RELATIVE``,
    then looked up on PATH) and ``args`` or ``MCP_STDIO_ARGS``. Raises ValueError."""
    command = config.mcp_stdio_command
    if not command:
        raise ValueError("MCP_STDIO_COMMAND is not set")
    if not os.path.isabs(command):
        if not config.mcp_stdio_allow_relative:
            raise ValueError(
                f"MCP_STDIO_COMMAND must be an absolute path, got {command!r} "
                "(set MCP_STDIO_ALLOW_RELATIVE=true to look it up on PATH)"
            )
        found = shutil.which(command)
        if found is None:
            raise ValueError(f"MCP_STDIO_COMMAND {command!r} is not on PATH")
        command = found
    rest = list(args) if args is not None else list(config.mcp_stdio_args)
    return [command, *rest]


class StdioBridge:
    """The ``nfrx mcp`` backend for a stdio provider.

    Run :meth:`run` in a nursery for as long as the agent serves (it owns every provider
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
        self.argv = provider_argv(config, args)
        self.env = build_env(config.mcp_stdio_env, os.environ)
        self.cwd = config.mcp_stdio_workdir or None
        self.poll_interval = PROBE_INTERVAL
        self.hello_options = hello_options
        self.max_processes = config.mcp_stdio_max_processes
        self.session_idle = config.mcp_session_idle
        self.modern: bool | None = None
        """Whether the provider speaks 2026-07-28 (None until the start-up probe answered)."""
        self.modern_versions: tuple[str, ...] = ()
        """The 2026-07-28-or-later versions the provider's ``server/discover`` named."""
        self.sessions: dict[str, Child] = {}
        self.spare: Child | None = None
        self.shared: Child | None = None
        self.last_error = ""
        self._counter = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._spare_ready = trio.Event()

    # -- lifetime ------------------------------------------------------------------------------

    @property
    def processes(self) -> int:
        """Provider processes alive or starting."""
        children = [*self.sessions.values(), self.spare, self.shared]
        return sum(1 for child in children if child is not None and not child.exited.is_set())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the provider processes: probe the era, keep a warm spare (and the shared modern
        process), reap idle sessions. Started as soon as the supervisor runs; readiness is
        what :meth:`probe` reports."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._supervise(nursery)
        finally:
            self._nursery = None

    async def _supervise(self, nursery: trio.Nursery) -> None:
        failures = 0
        while True:
            self._wake = trio.Event()
            try:
                self._check_keepers()
                if self.modern is None:
                    await self._discover(nursery)
                if self.modern and self.shared is None:
                    self.shared = await self._spawn(nursery, shared=True)
                if self.spare is None and self.processes < self.max_processes:
                    self.spare = await self._spawn(nursery)
                self.last_error = ""
                failures = 0
            except SpawnFailed as exc:
                self.last_error = str(exc)
                log.warning("stdio provider: %s", exc)
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                self._spare_ready.set()
                await trio.sleep(delay)
                continue
            self._spare_ready.set()
            self._reap()
            with trio.move_on_after(min(self.session_idle / 2, 30.0)):
                await self._wait_for_change()

    def _check_keepers(self) -> None:
        """Forget a spare or shared process that exited on its own (a failure to report)."""
        dead = [c for c in (self.spare, self.shared) if c is not None and c.exited.is_set()]
        if self.spare in dead:
            self.spare = None
        if self.shared in dead:
            self.shared = None
        if dead:
            raise SpawnFailed(dead[0].exit_reason)

    async def _wait_for_change(self) -> None:
        """Until a request wakes the supervisor or a process it keeps (spare, shared) exits."""
        async with trio.open_nursery() as nursery:
            for child in (self.spare, self.shared):
                if child is not None:
                    nursery.start_soon(_cancel_when, child.exited, nursery.cancel_scope)
            await self._wake.wait()
            nursery.cancel_scope.cancel()

    async def _spawn(self, nursery: trio.Nursery, *, shared: bool = False) -> Child:
        child = Child(self.argv, self.env, self.cwd, shared=shared)
        await nursery.start(child.run)
        # A command that dies at once (wrong arguments, missing module) is a failure too.
        with trio.move_on_after(0.2):
            await child.exited.wait()
        if child.exited.is_set():
            raise SpawnFailed(child.exit_reason)
        return child

    async def _discover(self, nursery: trio.Nursery) -> None:
        """Probe the provider's era with ``server/discover`` on a first process: a modern one
        keeps it as the shared process; any other answer (or none) means legacy."""
        child = await self._spawn(nursery)
        n = next(self._counter)
        upstream = f"nfrx-{n}"
        line = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": upstream,
                "method": "server/discover",
                "params": {
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": wire.MODERN_VERSION,
                        "io.modelcontextprotocol/clientInfo": {"name": "nfrx", "version": "1"},
                        "io.modelcontextprotocol/clientCapabilities": {},
                    }
                },
            }
        ).encode()
        send, receive = trio.open_memory_channel[Delivery](CALL_BUFFER)
        call = Call(json.dumps(upstream), upstream, "server/discover", send)
        child.register(call)
        answer = b""
        async with receive:
            await child.write(line)
            with trio.move_on_after(DISCOVER_TIMEOUT):
                async for delivery in receive:
                    if delivery.final:
                        answer = delivery.body
                        break
        child.retire(call)
        if child.exited.is_set():
            raise SpawnFailed(child.exit_reason)
        self.modern_versions = _modern_versions(answer)
        self.modern = bool(self.modern_versions)
        if self.modern:
            child.shared = True
            self.shared = child
        else:
            child.stop("legacy provider: the discovery process is not reused")
        log.info("the stdio provider speaks the %s protocol", "modern" if self.modern else "legacy")

    def _reap(self) -> None:
        now = trio.current_time()
        for session_id, child in list(self.sessions.items()):
            if child.exited.is_set():
                del self.sessions[session_id]
            elif child.active == 0 and now - child.last_used > self.session_idle:
                child.stop(f"idle for {self.session_idle:g} s")
                del self.sessions[session_id]

    def end_sessions(self, reason: str) -> None:
        """Stop every legacy session's process (e.g. when the tunnel is lost: the server has
        forgotten the sessions, so their clients re-initialize anyway). Never blocks."""
        for child in self.sessions.values():
            child.stop(reason)
        self.sessions.clear()

    # -- backend interface ---------------------------------------------------------------------

    async def probe(self) -> BackendState:
        """Ready while a process can take the next exchange (the spare, or the shared modern
        process); raises :class:`BackendUnavailable` with the latest failure otherwise."""
        await trio.lowlevel.checkpoint()
        if self._nursery is None:
            raise BackendUnavailable("the stdio bridge is not running")
        self._reap()
        if self.last_error:
            raise BackendUnavailable(self.last_error)
        keeper = self.shared if self.modern else self.spare
        if keeper is None or not keeper.alive:
            if self.modern is False and self.processes >= self.max_processes:
                return BackendState()  # busy, not broken: new sessions get 503
            raise BackendUnavailable(f"starting the stdio provider {self.argv[0]}")
        return BackendState()

    async def handle(self, stream: IncomingStream) -> Outcome:
        request = stream.request
        meta = {k.lower(): v for k, v in request.headers if k.lower().startswith(wire.META_PREFIX)}
        headers = {k.lower(): v for k, v in request.headers}
        era = meta.get(wire.Meta.ERA) or wire.era_of(headers.get("mcp-protocol-version"))
        session_id = headers.get("mcp-session-id", "")
        if request.path not in ("", "/"):
            return await _reply(
                stream,
                404,
                wire.relay_error(
                    None,
                    wire.RelayCode.RELAY_NOT_FOUND,
                    "a stdio provider has no such path",
                    retryable=False,
                ),
            )
        if request.method == "GET":
            return await self._serve_get(stream, era, session_id)
        if request.method == "DELETE":
            return await self._serve_delete(stream, era, session_id)
        if request.method != "POST":
            return await _reply(
                stream,
                405,
                wire.jsonrpc_error(None, wire.INVALID_REQUEST, "Method Not Allowed"),
                (("allow", "GET, POST, DELETE"),),
            )
        try:
            body = await stream.receive_all(MAX_LINE)
        except ValueError:
            return await _reply(
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
            code = wire.PARSE_ERROR if "not JSON" in str(exc) else wire.INVALID_REQUEST
            return await _reply(stream, 400, wire.jsonrpc_error(None, code, str(exc)))
        if era == wire.MODERN:
            child = self.shared if self.modern else None
            if child is None or not child.alive:
                return await self._not_modern(stream, message)
            rejection = await self._modern_rejection(child, message, body, request.headers)
            if rejection is not None:
                return await _reply(stream, rejection.status, rejection.body(message.id))
        else:
            found = await self._session_for(stream, message, session_id)
            if found is None:
                return Outcome.ANSWERED
            child = found
        child.active += 1
        try:
            if message.kind == wire.Kind.REQUEST:
                return await self._serve_request(stream, child, message, body, meta)
            return await self._serve_message(stream, child, message, body)
        finally:
            child.active -= 1
            child.last_used = trio.current_time()

    # -- sessions ------------------------------------------------------------------------------

    async def _session_for(
        self, stream: IncomingStream, message: wire.Message, session_id: str
    ) -> Child | None:
        """The session's process (after answering the client itself if there is none)."""
        if session_id:
            child = self.sessions.get(session_id)
            if child is None or not child.alive:
                self.sessions.pop(session_id, None)
                await _reply(stream, 404, _session_not_found(message.id))
                return None
            return child
        if message.kind != wire.Kind.REQUEST or message.method != "initialize":
            await _reply(
                stream,
                400,
                wire.jsonrpc_error(
                    message.id,
                    wire.INVALID_REQUEST,
                    "Bad Request: missing session (send initialize first)",
                ),
            )
            return None
        return await self._new_session(stream, message)

    async def _new_session(self, stream: IncomingStream, message: wire.Message) -> Child | None:
        spare = self.spare
        with trio.move_on_after(SPARE_WAIT):
            while spare is None or not spare.alive:
                if self.processes >= self.max_processes or self._nursery is None:
                    await _reply(
                        stream,
                        503,
                        wire.relay_error(
                            message.id,
                            wire.RelayCode.LIMIT_EXCEEDED,
                            f"this relay runs at most {self.max_processes} provider processes",
                            retryable=True,
                        ),
                        (("retry-after", "5"),),
                    )
                    return None
                if self.last_error:
                    break
                if self._spare_ready.is_set():
                    self._spare_ready = trio.Event()
                ready = self._spare_ready
                self._wake.set()
                await ready.wait()
                spare = self.spare
        if spare is None or not spare.alive:
            reason = self.last_error or "the provider process did not start in time"
            await _reply(
                stream,
                503,
                wire.relay_error(
                    message.id, wire.RelayCode.PROVIDER_UNAVAILABLE, reason, retryable=True
                ),
            )
            return None
        self.spare = None
        self._wake.set()  # start the next spare now
        spare.session_id = secrets.token_urlsafe(24)
        self.sessions[spare.session_id] = spare
        log.info("session %s… runs on provider pid %d", spare.session_id[:8], spare.pid)
        return spare

    async def _not_modern(self, stream: IncomingStream, message: wire.Message) -> Outcome:
        await trio.lowlevel.checkpoint()
        if self.modern is None or self.modern:
            reason = self.last_error or "the stdio provider is starting"
            return await _reply(
                stream,
                503,
                wire.relay_error(
                    message.id, wire.RelayCode.PROVIDER_UNAVAILABLE, reason, retryable=True
                ),
                (("retry-after", "5"),),
            )
        return await _reply(
            stream,
            400,
            wire.jsonrpc_error(
                message.id,
                wire.INVALID_REQUEST,
                "Bad Request: missing session; this provider speaks the legacy protocol, "
                "send initialize",
            ),
        )

    async def _serve_get(self, stream: IncomingStream, era: str, session_id: str) -> Outcome:
        if era == wire.MODERN or not session_id:
            return await _reply(
                stream,
                405,
                wire.jsonrpc_error(
                    None, wire.INVALID_REQUEST, "Method Not Allowed: no stream without a session"
                ),
                (("allow", "POST, DELETE"),),
            )
        child = self.sessions.get(session_id)
        if child is None or not child.alive:
            return await _reply(stream, 404, _session_not_found(None))
        if child.listener is not None:
            return await _reply(
                stream,
                409,
                wire.jsonrpc_error(
                    None, wire.INVALID_REQUEST, "Conflict: this session already has a GET stream"
                ),
            )
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
            return await _reply(
                stream,
                405,
                wire.jsonrpc_error(
                    None, wire.INVALID_REQUEST, "Method Not Allowed: no session to delete"
                ),
                (("allow", "POST"),),
            )
        child = self.sessions.pop(session_id, None)
        if child is None or not child.alive:
            return await _reply(stream, 404, _session_not_found(None))
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
        (see the module docstring for the checks and their order)."""
        pairs = [
            (name.lower(), value.strip(" \t"))
            for name, value in headers
            if not name.lower().startswith(wire.META_PREFIX)
        ]
        folded = _first_values(pairs)
        if message.kind == wire.Kind.NOTIFICATION:
            requested = folded.get("mcp-protocol-version", "")
            return _unsupported_version(requested, self.modern_versions)
        if message.kind != wire.Kind.REQUEST:
            return None
        duplicated = _duplicated_routing_header(pairs)
        if duplicated is not None:
            return Rejection(HEADER_MISMATCH, f"{duplicated} header appears more than once")
        decoded = json.loads(body)  # parse_message read it already: valid JSON, an object
        verdict = classify_request(decoded, folded, self.modern_versions)
        if isinstance(verdict, Rejection):
            return verdict
        rejection = await self._param_rejection(child, decoded, verdict, pairs)
        if rejection is not None:
            return rejection
        if message.method in REMOVED_METHODS:
            return Rejection(METHOD_NOT_FOUND, "Method not found", message.method)
        return None

    async def _param_rejection(
        self,
        child: Child,
        decoded: dict[str, Any],
        verdict: Envelope,
        pairs: list[tuple[str, str]],
    ) -> Rejection | None:
        """A ``tools/call``'s ``Mcp-Param-*`` headers against its tool's ``x-mcp-header``
        annotations (the SDK's ``_mcp_param_rejection``)."""
        if decoded.get("method") != "tools/call":
            return None
        params = decoded.get("params") or {}
        name = params.get("name")
        if not isinstance(name, str):
            return None
        raw_arguments = params.get("arguments")
        if raw_arguments is not None and not isinstance(raw_arguments, dict):
            return None
        arguments: dict[str, Any] = raw_arguments or {}
        prefix = MCP_PARAM_PREFIX.lower()
        if not arguments and not any(key.startswith(prefix) for key, _ in pairs):
            return None  # nothing mirrored either way: no declaration can be violated
        schema = await self._tool_input_schema(child, verdict, name)
        if schema is None:
            return None
        return validate_param_headers(schema, arguments, pairs)

    async def _tool_input_schema(self, child: Child, verdict: Envelope, name: str) -> Any:
        """``name``'s ``inputSchema`` from the provider's ``tools/list``, asked with the caller's
        envelope and walked page by page; None (skip the check) when the listing fails, takes
        longer than :data:`SCHEMA_TIMEOUT` or never names the tool."""
        meta: dict[str, Any] = {
            PROTOCOL_VERSION_KEY: verdict.protocol_version,
            CLIENT_CAPABILITIES_KEY: verdict.client_capabilities,
        }
        if verdict.client_info is not None:
            meta[CLIENT_INFO_KEY] = verdict.client_info
        params: dict[str, Any] = {"_meta": meta}
        seen: set[str] = set()
        with trio.move_on_after(SCHEMA_TIMEOUT):
            for _ in range(SCHEMA_PAGES):
                result = await self._ask(child, "tools/list", params)
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

    async def _ask(
        self, child: Child, method: str, params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Send the shared process a request of the bridge's own; its ``result`` object, or
        None (an error answer, or the process ended). Abandoned (cancelled) before its answer,
        the process is told with ``notifications/cancelled``, like a client's request."""
        upstream = f"nfrx-{next(self._counter)}"
        line = json.dumps({"jsonrpc": "2.0", "id": upstream, "method": method, "params": params})
        send, receive = trio.open_memory_channel[Delivery](CALL_BUFFER)
        call = Call(json.dumps(upstream), upstream, method, send)
        child.register(call)
        try:
            async with receive:
                if not await child.write(line.encode()):
                    return None
                async for delivery in receive:
                    if delivery.final:
                        return _result_of(delivery.body)
            return None
        finally:
            if child.retire(call):
                with trio.move_on_after(CANCEL_GRACE, shield=True):
                    await child.write(_cancelled(upstream, "nfrx: no longer needed"))

    # -- messages ------------------------------------------------------------------------------

    async def _serve_message(
        self, stream: IncomingStream, child: Child, message: wire.Message, body: bytes
    ) -> Outcome:
        """A notification or a client response: write it (rewritten if need be), answer 202."""
        line: bytes | None = body
        if message.kind == wire.Kind.RESPONSE:
            assert message.id is not None
            if message.id not in child.server_requests:
                if child.shared:
                    return await _reply(
                        stream,
                        400,
                        wire.jsonrpc_error(
                            None,
                            wire.INVALID_REQUEST,
                            "Bad Request: no request from the provider has this id",
                        ),
                    )
            else:
                owner = child.server_requests.pop(message.id)
                if owner is not None:
                    owner.bump()  # the client's answer is activity of the waiting request
        elif message.method == "notifications/cancelled":
            line = self._client_cancel(child, message, body)
        if line is not None and not await child.write(line):
            return await _reply(stream, 404, _session_not_found(None))
        await stream.send_response(202, (), end=True)
        return Outcome.ANSWERED

    def _client_cancel(self, child: Child, message: wire.Message, body: bytes) -> bytes | None:
        """The client cancels one of its requests: the line for the process, or None."""
        call = child.by_client.get(message.cancelled_id or "") if not child.shared else None
        if call is None or not child.retire(call):
            return None  # not in flight here (or shared: ids are not unique across clients)
        call.end = "cancelled"
        call.channel.close()
        return _rewrite(body, {REQUEST_ID: json.dumps(call.upstream_id)})

    async def _serve_request(
        self,
        stream: IncomingStream,
        child: Child,
        message: wire.Message,
        body: bytes,
        meta: dict[str, str],
    ) -> Outcome:
        assert message.id is not None
        n = next(self._counter)
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
            idle=_idle(meta),
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
                answered = await self._answer(stream, child, call, receive, message)
        finally:
            if not answered and child.retire(call):
                if message.method == "initialize":
                    child.stop("its initialize was abandoned")
                else:
                    reason = _cancel_reason(stream)
                    with trio.move_on_after(CANCEL_GRACE, shield=True):
                        await child.write(_cancelled(upstream, reason))
        return Outcome.BROKEN if call.end == "exited" else Outcome.ANSWERED

    async def _answer(
        self,
        stream: IncomingStream,
        child: Child,
        call: Call,
        receive: trio.MemoryReceiveChannel[Delivery],
        message: wire.Message,
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
                    return await self._ended(stream, call, committed, child)
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
                status = _modern_status(delivery.body) if child.shared else 200
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

    async def _ended(
        self, stream: IncomingStream, call: Call, committed: bool, child: Child
    ) -> bool:
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


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _modern_versions(answer: bytes) -> tuple[str, ...]:
    """The 2026-07-28-or-later versions a ``server/discover`` answer names (none: legacy)."""
    try:
        result = json.loads(answer).get("result") if answer else None
    except (ValueError, AttributeError):
        return ()
    versions = result.get("supportedVersions") if isinstance(result, dict) else None
    if not isinstance(versions, list):
        return ()
    return tuple(v for v in versions if isinstance(v, str) and wire.era_of(v) == wire.MODERN)


def _idle(meta: dict[str, str]) -> float:
    raw = meta.get(wire.Meta.IDLE)
    try:
        idle = float(raw) if raw is not None else math.inf
    except ValueError:
        return math.inf
    return idle + IDLE_MARGIN if math.isfinite(idle) and idle > 0 else math.inf


def _rewrite(body: bytes, values: dict[splice.Path, str]) -> bytes:
    spans = splice.locate(body, values.keys())
    return splice.splice(body, {span: values[path].encode() for path, span in spans.items()})


def _cancelled(upstream_id: str, reason: str) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": upstream_id, "reason": reason},
        }
    ).encode()


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


def _modern_status(body: bytes) -> int:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return 200
    code = error.get("code") if isinstance(error, dict) else None
    return _status_of(code) if isinstance(code, int) else 200


def _status_of(code: int) -> int:
    """The HTTP status of a modern JSON error answer with this code."""
    if -32022 <= code <= -32020:
        return 400
    return MODERN_ERROR_STATUS.get(code, 200)


def _session_not_found(request_id: str | None) -> bytes:
    return wire.relay_error(
        request_id,
        wire.RelayCode.SESSION_NOT_FOUND,
        "session not found (it ended or never existed); send initialize to start a new one",
        retryable=False,
        code=wire.INVALID_REQUEST,
    )


async def _final(stream: IncomingStream, body: bytes, committed: bool, headers: Headers) -> None:
    """A relay error for a request: the JSON answer, or the last SSE event."""
    if committed:
        await stream.send_data(wire.sse_message(body), end=True)
    else:
        await stream.send_response(200, headers)
        await stream.send_data(body, end=True)


async def _reply(stream: IncomingStream, status: int, body: bytes, extra: Headers = ()) -> Outcome:
    await stream.send_response(status, (*JSON_HEADERS, *extra))
    await stream.send_data(body, end=True)
    return Outcome.ANSWERED


def _result_of(answer: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    result = message.get("result") if isinstance(message, dict) else None
    return result if isinstance(result, dict) else None


# -- modern-era validation (mirrors mcp 2.3.0 mcp/shared/inbound.py; see the module docstring) ---


@attrs.frozen
class Rejection:
    """A modern request refused before it reaches the process: a JSON-RPC error whose HTTP
    status is the spec's table (:data:`MODERN_ERROR_STATUS`, -32020..-32022 -> 400)."""

    code: int
    message: str
    data: Any = None

    @property
    def status(self) -> int:
        return _status_of(self.code)

    def body(self, request_id: str | None) -> bytes:
        """The answer; ``request_id`` is the JSON text of the request's id (None: ``null``)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        encoded = json.dumps(error, separators=(",", ":"), ensure_ascii=False)
        return f'{{"jsonrpc":"2.0","id":{request_id or "null"},"error":{encoded}}}'.encode()


@attrs.frozen
class Envelope:
    """A modern request's ``params._meta`` envelope, once it passed the ladder."""

    protocol_version: str
    client_info: Any
    client_capabilities: Any


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Header name -> its first value (how the SDK's Starlette mapping reads a header)."""
    folded: dict[str, str] = {}
    for name, value in pairs:
        folded.setdefault(name, value)
    return folded


def _duplicated_routing_header(pairs: list[tuple[str, str]]) -> str | None:
    """A routing header sent more than once (first-copy and last-copy readers would disagree)."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in ROUTING_HEADERS:
            if name in seen:
                return name
            seen.add(name)
    return None


def _unsupported_version(requested: str, supported: Sequence[str]) -> Rejection | None:
    if requested in supported:
        return None
    return Rejection(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(supported), "requested": requested},
    )


def classify_request(
    body: dict[str, Any], headers: Mapping[str, str], supported: Sequence[str]
) -> Envelope | Rejection:
    """The modern validation ladder over a request (the SDK's ``classify_inbound_request``
    with headers): envelope keys (-32602), then the headers against the body (-32020), then the
    version (-32022). ``headers`` are keyed by lower-case name."""
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return Rejection(
            INVALID_PARAMS,
            "params._meta must be an object carrying the required "
            f"{PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r} envelope keys",
        )
    assert isinstance(params, dict)
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        return Rejection(
            INVALID_PARAMS,
            f"params._meta is missing the required envelope key(s): {', '.join(missing)}",
        )
    version: Any = meta[PROTOCOL_VERSION_KEY]
    version_header = headers.get("mcp-protocol-version")
    if version_header is None or version_header != version:
        return Rejection(
            HEADER_MISMATCH,
            "mcp-protocol-version header does not match the request envelope's protocol version",
        )
    method = body.get("method")
    if headers.get("mcp-method") != method:
        return Rejection(
            HEADER_MISMATCH, "mcp-method header does not match the request body's method"
        )
    name_key = NAME_BEARING_METHODS.get(method) if isinstance(method, str) else None
    if name_key is not None:
        value = params.get(name_key)
        if value is not None and decode_header_value(headers.get("mcp-name")) != value:
            return Rejection(
                HEADER_MISMATCH,
                f"mcp-name header does not match the request body's {name_key!r} parameter",
            )
    if not isinstance(version, str):
        return Rejection(INVALID_PARAMS, "the protocol-version envelope value must be a string")
    unsupported = _unsupported_version(version, supported)
    if unsupported is not None:
        return unsupported
    return Envelope(version, meta.get(CLIENT_INFO_KEY), meta[CLIENT_CAPABILITIES_KEY])


_B64_SENTINEL: Final = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An RFC 9110 token: what an ``x-mcp-header`` value (a header name) may be."""
_HEADER_TYPES: Final = frozenset({"string", "integer", "boolean"})
_CANONICAL_DECIMAL: Final = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_SUBSCHEMA_ONE: Final = frozenset(
    {
        "items",
        "contains",
        "unevaluatedItems",
        "additionalProperties",
        "propertyNames",
        "unevaluatedProperties",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SUBSCHEMA_LIST: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP: Final = frozenset({"patternProperties", "dependentSchemas", "$defs", "definitions"})


def decode_header_value(value: str | None) -> str | None:
    """A header value, its ``=?base64?...?=`` form decoded; None for a malformed (or
    non-canonical) one, so a corrupt header never matches a body value."""
    if value is None:
        return None
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match.group("payload")
    try:
        decoded = base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(decoded).decode("ascii") != payload:
        return None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _schema_positions(root: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every JSON Schema 2020-12 schema position in ``root`` with its chain of ``properties``
    keys (None once another applicator was crossed); iterative, never dereferences ``$ref``."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for keyword, value in node.items():
            if keyword == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    stack.append(((*path, name) if path is not None else None, sub))
            elif keyword in _SUBSCHEMA_ONE:
                stack.append((None, value))
            elif keyword in _SUBSCHEMA_LIST and isinstance(value, list):
                stack.extend((None, sub) for sub in value)
            elif keyword in _SUBSCHEMA_MAP and isinstance(value, dict):
                stack.extend((None, sub) for sub in value.values())


def _has_invalid_annotation(schema: Any) -> bool:
    """Whether any ``x-mcp-header`` is misplaced, not a token, on a type other than
    string/integer/boolean, or a case-insensitive duplicate (then nothing is validated:
    conforming clients drop such a tool and send no headers)."""
    seen: set[str] = set()
    for path, position in _schema_positions(schema):
        if "x-mcp-header" not in position:
            continue
        header = position["x-mcp-header"]
        if not path or not isinstance(header, str) or not _TOKEN.fullmatch(header):
            return True
        kind = position.get("type")
        if not isinstance(kind, str) or kind not in _HEADER_TYPES or header.lower() in seen:
            return True
        seen.add(header.lower())
    return False


def _render_scalar(value: Any) -> str | None:
    """A body value the way a client mirrors it into a header (None: not mirrorable)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        return None
    try:
        return str(value)
    except ValueError:  # an int past the interpreter's digit limit
        return None


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _param_matches(kind: Any, value: Any, rendered: str, decoded: str) -> bool:
    """Integer declarations compare numerically (``42`` matches ``42.0``), exactly; anything
    else compares the text."""
    if (
        kind == "integer"
        and not isinstance(value, bool)
        and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
        and _CANONICAL_DECIMAL.fullmatch(decoded) is not None
    ):
        whole, _, fraction = decoded.partition(".")
        if fraction and set(fraction) != {"0"}:
            return False
        try:
            return int(whole) == int(value)
        except ValueError:
            return False
    return decoded == rendered


def validate_param_headers(
    schema: Any, arguments: Mapping[str, Any], pairs: list[tuple[str, str]]
) -> Rejection | None:
    """Each ``x-mcp-header``-annotated argument and its ``Mcp-Param-*`` header must be present
    together and equal (after base64 decoding), or both absent (``null`` counts as absent); a
    recognised header sent twice is refused. The first failure, as -32020 (the SDK's
    ``validate_mcp_param_headers``). ``pairs`` are the raw headers, names lower-cased."""
    if _has_invalid_annotation(schema):
        return None
    folded: dict[str, str] = {}
    duplicated: set[str] = set()
    for name, value in pairs:
        if name in folded:
            duplicated.add(name)
        folded[name] = value
    for path, position in _schema_positions(schema):
        token = position.get("x-mcp-header")
        if not path or not isinstance(token, str):
            continue
        header = f"{MCP_PARAM_PREFIX}{token}"
        raw = folded.get(header.lower())
        value = _value_at(arguments, path)
        argument = ".".join(path)
        if raw is not None and header.lower() in duplicated:
            return Rejection(HEADER_MISMATCH, f"{header} header appears more than once")
        if value is None:
            if raw is not None:
                return Rejection(
                    HEADER_MISMATCH,
                    f"{header} header is present but the request body's {argument!r} argument "
                    "is absent",
                )
            continue
        rendered = _render_scalar(value)
        if rendered is None:
            if raw is not None:
                return Rejection(
                    HEADER_MISMATCH,
                    f"{header} header does not match the request body's {argument!r} argument",
                )
            continue
        if raw is None:
            return Rejection(
                HEADER_MISMATCH,
                f"{header} header is missing but the request body's {argument!r} argument "
                "is present",
            )
        decoded = decode_header_value(raw)
        if decoded is None:
            return Rejection(
                HEADER_MISMATCH, f"{header} header carries a malformed base64 sentinel value"
            )
        if not _param_matches(position.get("type"), value, rendered, decoded):
            return Rejection(
                HEADER_MISMATCH,
                f"{header} header does not match the request body's {argument!r} argument",
            )
    return None
