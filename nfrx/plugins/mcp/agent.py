"""The MCP relay, agent side: ``nfrx mcp`` next to an MCP provider.

Two provider kinds (exactly one per agent):

* **Streamable HTTP** (``MCP_HTTP_URL``): :class:`McpHttpBackend` replays each tunnel stream as
  one HTTP exchange with the provider: the method, the client's body bytes and the allow-listed
  headers (the server applied the allow-list; the agent drops the server's ``x-nfrx-*``
  annotations, which are for it alone), and streams the provider's answer back verbatim, chunk
  by chunk, so every SSE event reaches the client as it comes;
* **stdio** (``MCP_STDIO_COMMAND``): the bridge of :mod:`nfrx.plugins.mcp.stdio` (see
  :func:`stdio_backend`).

Cancellation (reference ``mcp.md`` section 5.3 and the contract in :mod:`nfrx.plugins.mcp`): the
tunnel session cancels a stream's handler when the server resets the stream, when the tunnel
ends or when ``Open.timeout`` passes; leaving ``client.stream()`` then closes the provider
connection, and a legacy request still unanswered is also cancelled with a POSTed
``notifications/cancelled`` (:mod:`.http_cancel` says when and how).

The agent enforces the call's inactivity limit itself too (``x-nfrx-mcp-idle`` plus
:data:`IDLE_MARGIN`): a provider silent for that long on a request is cancelled the same way and
the stream reset with ``timeout``, even if the server's own reset never arrives. Activity on any
exchange of the same legacy session (a progress event on the GET stream, the client's answer to
a sampling request) counts, because the server counts it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import trio

from nfrx.agent.proxy import Outcome
from nfrx.agent.runtime import AgentExit, BackendState, BackendUnavailable
from nfrx.config.load import ConfigError
from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.http_cancel import (
    ACCEPT_BOTH,
    FinalWatch,
    IdleClock,
    cancel_reason,
    paused,
    tell_provider,
    valid_id,
)
from nfrx.protocol import ResetCode
from nfrx.redact import redact

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from nfrx.agent.runtime import Backend
    from nfrx.config.model import McpAgentConfig
    from nfrx.transport.streams import IncomingStream

log = logging.getLogger("nfrx.mcp")

PROBE_INTERVAL: Final = 20.0
"""Seconds between provider probes while it is healthy (like the other agents)."""

IDLE_MARGIN: Final = 5.0
"""Seconds the agent waits past the server's inactivity limit before giving up on its own (the
server's reset normally arrives first)."""

BUFFER_BODY: Final = 1024 * 1024
"""A request body up to this size is sent with a Content-Length (some providers dislike chunked
uploads); a larger one is streamed."""

PRM_PATH: Final = "/.well-known/oauth-protected-resource"
"""RFC 9728's well-known path (tunnelled for pass-through relays)."""

PROBE_VERSION: Final = "2025-11-25"

_DROP_UPSTREAM: Final = frozenset(
    {
        "host",
        "origin",
        "cookie",
        "content-length",
        "transfer-encoding",
        "connection",
        "accept-encoding",
    }
)
"""Never sent to the provider whatever the Open frame holds (httpx sets its own framing)."""

_RESOURCE_METADATA: Final = re.compile(r'resource_metadata="[^"]*"')


# -- the backend --------------------------------------------------------------------------------


def hello_options(config: McpAgentConfig, transport: str) -> tuple[tuple[str, str], ...]:
    """What an MCP agent announces in its Hello (the contract): never the token itself."""
    options: list[tuple[str, str]] = [("transport", transport)]
    if config.auth_token:
        digest = hashlib.sha256(config.auth_token.encode()).hexdigest()
        options.append(("auth_token_sha256", digest))
    if config.mcp_auth_passthrough:
        options.append(("auth_passthrough", "true"))
    return tuple(options)


def http_client(config: McpAgentConfig) -> httpx.AsyncClient:
    """The provider client: HTTP/1.1 (closing a response is how a modern provider learns of a
    cancel), no read timeout (calls are bounded by Trio scopes), no proxies from the environment,
    redirects never followed, a pool with room for the requests plus long-lived streams."""
    size = config.mcp_max_inflight * 2 + 16
    return httpx.AsyncClient(
        http2=False,
        trust_env=False,
        follow_redirects=False,
        verify=not config.mcp_http_insecure_skip_verify,
        timeout=httpx.Timeout(None, connect=config.mcp_http_timeout),
        limits=httpx.Limits(
            max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0
        ),
    )


def prm_urls(provider_url: str) -> tuple[str, ...]:
    """The provider's protected-resource metadata URLs, in RFC 9728's order: path-inserted for
    the provider URL's path, then the root form."""
    parts = urlsplit(provider_url)
    root = urlunsplit((parts.scheme, parts.netloc, PRM_PATH, "", ""))
    path = parts.path.rstrip("/")
    if not path:
        return (root,)
    return (urlunsplit((parts.scheme, parts.netloc, PRM_PATH + path, "", "")), root)


def public_prm_url(public_url: str) -> str:
    """The path-inserted PRM URL of the relay's public URL (what clients must fetch)."""
    parts = urlsplit(public_url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, PRM_PATH + path, "", ""))


class McpHttpBackend:
    """A Streamable HTTP provider behind a verbatim tunnel (see the module docstring)."""

    kind = "mcp"

    def __init__(self, config: McpAgentConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.base_url = config.mcp_http_url
        self.poll_interval = PROBE_INTERVAL
        self.hello_options = hello_options(config, "http")
        self.idle_margin = IDLE_MARGIN
        """Seconds past the server's inactivity limit before the agent gives up by itself."""
        self._sessions: dict[str, set[IdleClock]] = {}
        """In-flight requests' idle clocks by legacy session id (activity anywhere bumps all)."""

    def describe(self, agent_id: str) -> str:
        """What the agent serves, for its log lines (an MCP relay has no models)."""
        return f"MCP relay at /api/mcp/id/{agent_id} (HTTP provider)"

    # -- probe ---------------------------------------------------------------------------------

    async def probe(self) -> BackendState:
        """POST a legacy ``initialize``: any answer below 500 (401 included: an OAuth provider is
        up) means reachable. A session it created is deleted at once."""
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROBE_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "nfrx-probe", "version": "1"},
                },
            }
        ).encode()
        headers = {
            "accept": ACCEPT_BOTH,
            "content-type": "application/json",
            "accept-encoding": "identity",
        }
        url = self.base_url
        session_id = None
        try:
            with trio.fail_after(self.config.mcp_http_timeout):
                async with self.client.stream("POST", url, headers=headers, content=body) as resp:
                    status = resp.status_code
                    session_id = resp.headers.get("mcp-session-id")
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise BackendUnavailable(f"POST {url}: {type(exc).__name__}: {exc}") from exc
        if session_id:
            await self._delete_probe_session(session_id)
        if status >= 500:
            raise BackendUnavailable(f"POST {url}: HTTP {status}")
        return BackendState()

    async def _delete_probe_session(self, session_id: str) -> None:
        headers = {"mcp-session-id": session_id, "mcp-protocol-version": PROBE_VERSION}
        with trio.move_on_after(self.config.mcp_http_timeout):
            try:
                await self.client.delete(self.base_url, headers=headers)
            except httpx.HTTPError as exc:
                log.debug("could not delete the probe's session: %s", exc)

    # -- exchanges -----------------------------------------------------------------------------

    async def handle(self, stream: IncomingStream) -> Outcome:
        """Relay one tunnel stream as one HTTP exchange with the provider (see the module
        docstring); an abandoned legacy request is cancelled at the provider."""
        request = stream.request
        meta, headers = _split_headers(request.headers)
        url = self._url(request.path)
        if url is None:
            await _answer_not_found(stream, request.path)
            return Outcome.ANSWERED
        is_request = meta.get(wire.Meta.KIND) == wire.Kind.REQUEST
        method = meta.get(wire.Meta.METHOD, "")
        request_id = valid_id(meta.get(wire.Meta.ID)) if is_request else None
        session_id = dict(headers).get("mcp-session-id", "")
        exempt = method in wire.EXEMPT_METHODS  # never timed out, by the agent either
        clock = self._clock(meta) if is_request and not exempt else None
        legacy = meta.get(wire.Meta.ERA, wire.LEGACY) == wire.LEGACY
        # What the provider is told if it is abandoned: a legacy request, never initialize.
        cancellable = request_id if legacy and method != "initialize" else None
        self._touch_session(session_id)
        watch = FinalWatch(request_id)
        self._join(session_id, clock)
        finished = idle_fired = False
        outcome = Outcome.ANSWERED
        try:
            with clock.scope if clock is not None else contextlib.nullcontext():
                outcome = await self._exchange(stream, url, headers, watch, clock, session_id, meta)
            idle_fired = clock is not None and clock.scope.cancelled_caught
            finished = not idle_fired
        finally:
            self._leave(session_id, clock)
            if not finished and cancellable is not None and not watch.answered:
                reason, tell = cancel_reason(stream, idle_fired)
                if tell:
                    await tell_provider(self.client, url, headers, cancellable, reason)
        if idle_fired:
            assert clock is not None
            stream.reset(
                ResetCode.TIMEOUT,
                f"the provider sent nothing for {clock.limit:g} s (the agent's own limit)",
            )
            return Outcome.ANSWERED
        return outcome

    def _join(self, session_id: str, clock: IdleClock | None) -> None:
        """Count ``clock`` among its legacy session's (activity anywhere bumps them all)."""
        if clock is not None and session_id:
            self._sessions.setdefault(session_id, set()).add(clock)

    def _leave(self, session_id: str, clock: IdleClock | None) -> None:
        group = self._sessions.get(session_id)
        if clock is not None and group is not None:
            group.discard(clock)
            if not group:
                del self._sessions[session_id]

    def _url(self, path: str) -> str | None:
        base = self.base_url
        if path in ("", "/"):
            return base
        if path.rstrip("/") == PRM_PATH:
            return prm_urls(base)[0]
        return None

    def _clock(self, meta: dict[str, str]) -> IdleClock | None:
        raw = meta.get(wire.Meta.IDLE)
        if raw is None:
            return None
        try:
            idle = float(raw)
        except ValueError:
            return None
        if not math.isfinite(idle) or idle <= 0:
            return None
        return IdleClock(idle + self.idle_margin)

    def _touch_session(self, session_id: str) -> None:
        if session_id:
            for clock in self._sessions.get(session_id, ()):
                clock.bump()

    async def _exchange(
        self,
        stream: IncomingStream,
        url: str,
        headers: list[tuple[str, str]],
        watch: FinalWatch,
        clock: IdleClock | None,
        session_id: str,
        meta: dict[str, str],
    ) -> Outcome:
        """One HTTP exchange with the provider; failures reset the stream and are returned."""
        request = stream.request
        content = None if request.end else await _request_content(stream)
        try:
            async with self.client.stream(
                request.method, url, headers=headers, content=content
            ) as resp:
                self._activity(clock, session_id)
                status = resp.status_code
                out_headers = wire.response_headers(resp.headers.multi_items())
                public_url = meta.get(wire.Meta.PUBLIC_URL)
                if self.config.mcp_auth_passthrough and public_url:
                    out_headers = _rewrite_challenge(out_headers, public_url)
                if status != 200 or not _is_sse(resp):
                    # A JSON answer (or an error status) is the final answer once it is whole.
                    watch.request_id = None
                await paused(clock, stream.send_response(status, tuple(out_headers)))
                async for chunk in resp.aiter_raw():
                    self._activity(clock, session_id)
                    watch.feed(chunk)
                    await paused(clock, stream.send_data(chunk))
                watch.answered = watch.answered or not _is_sse(resp) or status != 200
                await paused(clock, stream.end())
                return Outcome.SERVER_ERROR if status >= 500 else Outcome.ANSWERED
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            watch.answered = True  # nothing reached the provider: nothing to cancel
            stream.reset(
                ResetCode.UPSTREAM_UNREACHABLE,
                redact(f"cannot reach the MCP provider at {url}: {exc}"),
            )
            return Outcome.UNREACHABLE
        except httpx.HTTPError as exc:
            watch.answered = True  # the connection is gone; so is the provider's request
            stream.reset(
                ResetCode.UPSTREAM_ERROR,
                redact(f"the MCP provider at {url} failed: {type(exc).__name__}: {exc}"),
            )
            return Outcome.BROKEN

    def _activity(self, clock: IdleClock | None, session_id: str) -> None:
        if clock is not None:
            clock.bump()
        self._touch_session(session_id)


def _split_headers(
    given: Sequence[tuple[str, str]],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The server's ``x-nfrx-*`` annotations (for the agent alone), and the headers for the
    provider (names lower-cased, never :data:`_DROP_UPSTREAM`; ``accept-encoding: identity``)."""
    meta: dict[str, str] = {}
    headers: list[tuple[str, str]] = []
    for name, value in given:
        lower = name.lower()
        if lower.startswith(wire.META_PREFIX):
            meta[lower] = value
        elif lower not in _DROP_UPSTREAM:
            headers.append((lower, value))
    headers.append(("accept-encoding", "identity"))
    return meta, headers


def _is_sse(resp: httpx.Response) -> bool:
    content_type: str = resp.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "text/event-stream"


async def _request_content(stream: IncomingStream) -> bytes | AsyncIterator[bytes]:
    """The request body: whole bytes (with a Content-Length) when small, else a stream."""
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.receive_some():
        parts.append(chunk)
        size += len(chunk)
        if size > BUFFER_BODY:
            return _rest(parts, stream)
    return b"".join(parts)


async def _rest(head: list[bytes], stream: IncomingStream) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    while chunk := await stream.receive_some():
        yield chunk


def _rewrite_challenge(headers: list[tuple[str, str]], public_url: str) -> list[tuple[str, str]]:
    """Point ``resource_metadata`` in ``WWW-Authenticate`` at the relay's public PRM URL."""
    target = f'resource_metadata="{public_prm_url(public_url)}"'
    return [
        (k, _RESOURCE_METADATA.sub(target, v) if k == "www-authenticate" else v) for k, v in headers
    ]


async def _answer_not_found(stream: IncomingStream, path: str) -> None:
    body = wire.relay_error(
        None, wire.RelayCode.RELAY_NOT_FOUND, f"no such MCP relay path: {path}", retryable=False
    )
    await stream.send_response(404, (("content-type", "application/json"),))
    await stream.send_data(body, end=True)


# -- the provider and the agent process ---------------------------------------------------------


@attrs.frozen
class ProviderSpec:
    """The one provider an ``nfrx mcp`` relays to, validated."""

    transport: str
    """``http`` or ``stdio``."""
    url: str = ""
    """MCP_HTTP_URL (http)."""
    command: str = ""
    """The absolute path of the provider program (stdio)."""
    args: tuple[str, ...] = ()
    workdir: str = ""


def provider_spec(config: McpAgentConfig, args: Sequence[str] | None = None) -> ProviderSpec:
    """Check the provider settings; ``args`` (after ``--``) replace MCP_STDIO_ARGS.

    Raises :class:`~nfrx.config.load.ConfigError` with a one-line reason.
    """
    http, command = config.mcp_http_url.strip(), config.mcp_stdio_command.strip()
    if http and command:
        raise ConfigError("set exactly one of MCP_HTTP_URL and MCP_STDIO_COMMAND, not both")
    if not http and not command:
        raise ConfigError(
            "no MCP provider: set MCP_HTTP_URL (--mcp-http-url) or MCP_STDIO_COMMAND "
            "(--mcp-stdio-command)"
        )
    if http:
        if args:
            raise ConfigError(
                "arguments after -- are for a stdio provider (MCP_STDIO_COMMAND), "
                "not for MCP_HTTP_URL"
            )
        parts = urlsplit(http)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"MCP_HTTP_URL: {http!r} is not an http:// or https:// URL")
        return ProviderSpec("http", url=http)
    return _stdio_spec(config, command, args)


def _stdio_spec(config: McpAgentConfig, command: str, args: Sequence[str] | None) -> ProviderSpec:
    """The stdio half of :func:`provider_spec`: an executable file, found on PATH only when
    ``MCP_STDIO_ALLOW_RELATIVE``, and an existing working directory."""
    if os.path.isabs(command):
        resolved = command
    elif not config.mcp_stdio_allow_relative:
        raise ConfigError(
            f"MCP_STDIO_COMMAND: {command!r} is not an absolute path "
            "(set MCP_STDIO_ALLOW_RELATIVE=true to look it up on PATH)"
        )
    else:
        found = shutil.which(command)
        if found is None:
            raise ConfigError(f"MCP_STDIO_COMMAND: {command!r} was not found on PATH")
        resolved = os.path.abspath(found)
    if not os.path.isfile(resolved) or not os.access(resolved, os.X_OK):
        raise ConfigError(f"MCP_STDIO_COMMAND: {resolved} is not an executable file")
    workdir = config.mcp_stdio_workdir
    if workdir and not os.path.isdir(workdir):
        raise ConfigError(f"MCP_STDIO_WORKDIR: {workdir} is not a directory")
    argv = tuple(args) if args is not None else config.mcp_stdio_args
    return ProviderSpec("stdio", command=resolved, args=argv, workdir=workdir)


@contextlib.asynccontextmanager
async def open_provider(
    config: McpAgentConfig, args: Sequence[str] | None = None
) -> AsyncIterator[tuple[Backend, str]]:
    """The backend of the provider ``config`` names (``args`` replace MCP_STDIO_ARGS) and where
    it is, open for the block's length: an HTTP client or a stdio process pool. Raises
    AgentExit (status 2) for provider settings :func:`provider_spec` refuses."""
    try:
        spec = provider_spec(config, args)
    except ConfigError as exc:
        raise AgentExit(f"configuration error: {exc}", 2) from exc
    if spec.transport == "http":
        async with http_client(config) as client:
            yield McpHttpBackend(config, client), spec.url
        return
    async with stdio_backend(config, spec) as bridge:
        yield bridge, spec.command


@contextlib.asynccontextmanager
async def stdio_backend(config: McpAgentConfig, spec: ProviderSpec) -> AsyncIterator[Backend]:
    """The stdio bridge of :mod:`nfrx.plugins.mcp.stdio`, its process pool running for the
    block's length (leaving the block stops every provider process)."""
    from nfrx.plugins.mcp.stdio import StdioBridge

    try:
        bridge = StdioBridge(config, args=spec.args, hello_options=hello_options(config, "stdio"))
    except ValueError as exc:
        raise AgentExit(f"configuration error: {exc}", 2) from exc
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.run)
        try:
            yield bridge
        finally:
            nursery.cancel_scope.cancel()
