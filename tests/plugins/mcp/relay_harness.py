"""The MCP relay's server side in process: the real app (hypercorn on 127.0.0.1, a free port) with
one relay registered whose tunnel is an in-memory pair; the agent's end of it runs the test's
stream handler, which plays the ``nfrx mcp`` agent (scripted, or a real bridge).

Tests reach the relay with a real HTTP client over loopback, so client disconnects, streamed
bodies and the app's per-request cleanups all behave as in production.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from hypercorn.trio import serve
from quart_trio import QuartTrio

from nfrx.config.model import ServerConfig
from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.plugin import McpPlugin
from nfrx.plugins.mcp.server import McpRelayRoutes
from nfrx.plugins.mcp.sessions import McpSession, RelayState, credential_hash
from nfrx.protocol import ResetCode
from nfrx.server.app import create_app
from nfrx.server.gateway import Gateway
from nfrx.server.registry import AgentRecord
from nfrx.server.runner import compose, hypercorn_config
from nfrx.transport.errors import StreamReset
from nfrx.transport.session import TunnelSession
from nfrx.transport.streams import IncomingStream
from tests.transport.helpers import Tunnel, open_tunnel

RELAY = "r1"
API_KEY = "ak"
CAP = 20.0
"""Hang guard for one test (in-process, real clock)."""
LEGACY = "2025-11-25"
JSON = (("content-type", "application/json"),)
SSE = (("content-type", "text/event-stream"),)


@attrs.define(eq=False)
class Agent:
    """What the relay's agent end saw: each stream's request, body, and how it ended."""

    requests: list[tuple[str, dict[str, str], bytes]] = attrs.field(factory=list)
    resets: list[str] = attrs.field(factory=list)
    """The reset code of each stream the server reset (the agent's cancel scope fired)."""
    reset: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class Relay:
    gateway: Gateway
    record: AgentRecord
    tunnel: Tunnel
    agent: Agent
    base: str

    @property
    def url(self) -> str:
        return f"{self.base}/api/mcp/id/{RELAY}"

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {API_KEY}"}

    def open_session(self, session_id: str = "s1") -> RelayState:
        """Record a session the API key's holder created (as the provider's answer would) and
        return the relay's state."""
        state = self.gateway.plugin(McpPlugin).relays.state(self.record)
        state.sessions[session_id] = McpSession(session_id, credential_hash(API_KEY))
        return state

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            **self.auth,
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **{k.replace("_", "-"): v for k, v in extra.items()},
        }


Script = Callable[[IncomingStream, Agent], Awaitable[None]]


def connect(
    gateway: Gateway, session: TunnelSession, options: dict[str, str], status: str = "ready"
) -> AgentRecord:
    """Register relay :data:`RELAY` on ``session`` (what the connect route does)."""
    record = AgentRecord(
        kind="mcp",
        id=RELAY,
        name="box",
        version="test",
        session=session,
        max_concurrency=4,
        status=status,
        options=options,
    )
    gateway.registry.add(record)
    return record


@asynccontextmanager
async def serve_relay(
    script: Script, *, options: dict[str, str] | None = None, **settings: Any
) -> AsyncIterator[Relay]:
    """The app with relay :data:`RELAY` connected; each stream runs ``script``."""
    config = ServerConfig(host="127.0.0.1", port=0, api_key=API_KEY, **settings)
    gateway = compose(config)
    app = create_app(gateway)
    agent = Agent()

    async def handler(stream: IncomingStream) -> None:
        body = b"" if stream.request.end else await stream.receive_all(1 << 20)
        headers = {k.lower(): v for k, v in stream.request.headers}
        agent.requests.append((stream.request.method, headers, body))
        try:
            await script(stream, agent)
        finally:
            failure = stream.failure
            if isinstance(failure, StreamReset):
                agent.resets.append(failure.code)
                agent.reset.set()

    with trio.fail_after(CAP):
        async with open_tunnel(handler) as tunnel, trio.open_nursery() as nursery:
            record = connect(gateway, tunnel.server, {"transport": "stdio", **(options or {})})
            shutdown = trio.Event()
            binds: list[str] = await nursery.start(
                functools.partial(
                    serve,
                    app,
                    hypercorn_config(config),
                    shutdown_trigger=shutdown.wait,
                    mode="asgi",
                )
            )
            try:
                yield Relay(gateway, record, tunnel, agent, binds[0])
            finally:
                nursery.cancel_scope.cancel()


# -- scripted agents ------------------------------------------------------------------------------


def answer_json(message: dict[str, Any], *headers: tuple[str, str]) -> Script:
    """An agent that answers every stream with ``message`` as one JSON body."""

    async def script(stream: IncomingStream, agent: Agent) -> None:
        await stream.send_response(200, (*JSON, *headers))
        await stream.send_data(json.dumps(message).encode(), end=True)

    return script


async def progress_then_wait(stream: IncomingStream, agent: Agent) -> None:
    """An SSE answer to a request or a GET: one progress event, then nothing until the server
    resets the stream; a notification or a client's response is accepted with 202."""
    kind = dict(stream.request.headers).get(wire.Meta.KIND)
    if kind in (wire.Kind.NOTIFICATION, wire.Kind.RESPONSE):
        await stream.send_response(202, (), end=True)
        return
    await stream.send_response(200, SSE)
    event = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    await stream.send_data(b"event: message\ndata: " + json.dumps(event).encode() + b"\n\n")
    await trio.sleep_forever()


async def reset_upstream_error(stream: IncomingStream, agent: Agent) -> None:
    """The agent's provider failed: the stream is reset ``upstream_error``."""
    await trio.lowlevel.checkpoint()
    stream.reset(ResetCode.UPSTREAM_ERROR, "the provider broke")


def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
    ).encode()


def access_lines(caplog: Any) -> list[str]:
    """The relay's access-log lines (one per finished exchange)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "nfrx.mcp" and r.levelno == logging.INFO and " relay=" in r.getMessage()
    ]


# -- the routes' methods, inside a request context ------------------------------------------------


@attrs.define(eq=False)
class Routes:
    routes: McpRelayRoutes
    record: AgentRecord
    app: QuartTrio

    def request(
        self,
        method: str = "POST",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Any:
        """A request context for ``/api/mcp/id/r1`` (the API key unless ``headers`` say)."""
        given = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        return self.app.test_request_context(
            f"/api/mcp/id/{RELAY}", method=method, headers={**given, **(headers or {})}, data=body
        )


@asynccontextmanager
async def relay_routes(
    *, options: dict[str, str] | None = None, status: str = "ready", **settings: Any
) -> AsyncIterator[Routes]:
    """:class:`McpRelayRoutes` over a gateway where relay :data:`RELAY` is connected (through an
    in-memory tunnel whose agent end answers nothing)."""
    settings.setdefault("api_key", API_KEY)
    gateway = compose(ServerConfig(**settings))
    routes = McpRelayRoutes(gateway, gateway.plugin(McpPlugin).relays)

    async def handler(stream: IncomingStream) -> None:
        await trio.sleep_forever()

    async with open_tunnel(handler) as tunnel:
        record = connect(gateway, tunnel.server, options or {}, status)
        yield Routes(routes, record, QuartTrio("test"))
