"""The agents' WebSocket endpoint: authenticate the upgrade, handshake, register, run the tunnel.

The client key is checked on the HTTP upgrade request, before ``accept()``: a wrong key is an HTTP
401 and never reaches the frame layer. The tunnel then lives exactly as long as this route's task
(quart-trio cancels it when the socket drops); the agent is in the registry only while its tunnel
runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio
from quart import Response, websocket

from nfrx._version import __version__
from nfrx.protocol import PROTOCOL_VERSION, Frame, Goodbye, Load, Refuse, Status, Welcome
from nfrx.server import auth
from nfrx.server.announcements import (
    OVER_LIMIT,
    AnnouncementLimits,
    OverLimit,
    check_hello,
    check_status,
)
from nfrx.server.registry import AgentRecord, DuplicateAgent
from nfrx.transport.errors import HandshakeFailed, TransportClosed
from nfrx.transport.handshake import receive_hello
from nfrx.transport.session import CLOSE_POLICY, TunnelSession, TunnelSettings
from nfrx.transport.websocket_server import ServerWebSocket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.protocol import Hello, TunnelConnection
    from nfrx.server.gateway import Gateway

log = logging.getLogger("nfrx.agents")

STATUS_LOG_BURST = 10
STATUS_LOG_RATE = 1.0
"""Status changes of one agent are logged at info up to STATUS_LOG_BURST at once, then at
STATUS_LOG_RATE a second (the others at debug): an agent flipping its status as fast as it can
does not flood the log, and a person draining and undraining one sees every change."""


def _json_response(status: int, code: str, message: str) -> Response:
    error = {"message": message, "type": "authentication_error", "code": code}
    return Response(
        json.dumps({"error": error}),
        status=status,
        content_type="application/json",
    )


def describe(status: str, models: tuple[str, ...], capacity: int, *, named_models: bool) -> str:
    """An agent's state for the log: ``ready, 2 models, capacity 4``; the model count only for
    kinds whose agents serve models clients name (:attr:`Plugin.serves_models
    <nfrx.server.plugin.Plugin.serves_models>`)."""
    if not named_models:
        return f"{status}, capacity {capacity}"
    return f"{status}, {len(models)} model{'' if len(models) == 1 else 's'}, capacity {capacity}"


async def serve_agent(gateway: Gateway, kind: str) -> Response | None:
    """The body of a ``/api/<kind>/connect`` WebSocket route."""
    token = auth.bearer_token(websocket.headers.get("Authorization"))
    roles = websocket.headers.get("X-User-Roles")
    config = gateway.config
    if not auth.authorized(token, config.client_key, roles, config.client_http_roles):
        log.warning("refused a %s agent from %s: bad client key", kind, websocket.remote_addr)
        return _json_response(401, "invalid_client_key", "missing or invalid client key")
    if gateway.draining:
        return _json_response(503, "draining", "the server is draining")
    await websocket.accept()
    transport = ServerWebSocket(cast("Any", websocket)._get_current_object())
    settings = TunnelSettings(
        heartbeat_interval=config.heartbeat_interval, dead_after=config.agent_dead_after
    )
    try:
        conn, hello = await receive_hello(transport, timeout=settings.handshake_timeout)
    except HandshakeFailed as exc:
        log.warning("%s agent from %s: %s", kind, websocket.remote_addr, exc)
        await transport.aclose(CLOSE_POLICY, str(exc)[:120])
        return None
    refuse = functools.partial(_refuse, transport, conn, kind, hello.agent_id)
    limits = AnnouncementLimits.of(config)
    problem = _hello_problem(hello, kind, limits)
    if problem is not None:
        await refuse(*problem)
        return None

    statuses: StatusUpdates | None = None

    def on_frame(frame: Frame) -> None:
        if isinstance(frame, Goodbye):
            # Every frame the agent sent before has been handled: closing now loses nothing.
            session.close(f"agent said goodbye ({frame.reason})")
        elif isinstance(frame, Load):
            gateway.registry.report_load(record, frame.elsewhere)
        elif isinstance(frame, Status) and statuses is not None:
            try:
                statuses.apply(frame)
            except OverLimit as exc:
                agent = statuses.record
                log.warning("%s agent %s (%s): status refused: %s", kind, agent.name, agent.id, exc)
                session.close(f"status over limit: {exc}", CLOSE_POLICY)

    session = TunnelSession(
        transport, conn, settings, on_frame=on_frame, name=f"{kind}:{hello.name}"
    )
    record = AgentRecord(
        kind=kind,
        id=hello.agent_id,
        name=hello.name or hello.agent_id[:8],
        version=hello.agent_version,
        session=session,
        models=hello.models,
        max_concurrency=hello.max_concurrency,
        status=hello.status,
        embedding_batch_size=hello.embedding_batch_size,
        options=dict(hello.options),
    )
    statuses = StatusUpdates(gateway, record, limits, gateway.serves_models(kind))
    if await _register(gateway, record, settings.heartbeat_interval, refuse):
        await _run(gateway, transport, conn, record, statuses.named_models)
    return None


async def _refuse(
    transport: ServerWebSocket,
    conn: TunnelConnection,
    kind: str,
    agent_id: str,
    code: str,
    message: str,
) -> None:
    """Tell the agent why it is refused (a Refuse frame) and close its socket."""
    log.warning("refused %s agent %r: %s", kind, agent_id[:64], message)
    with contextlib.suppress(TransportClosed):  # the agent left meanwhile: nothing to tell
        await transport.send_message(conn.send(Refuse(code=code, message=message)))
    await transport.aclose(CLOSE_POLICY, code)


def _hello_problem(hello: Hello, kind: str, limits: AnnouncementLimits) -> tuple[str, str] | None:
    """Why a Hello cannot open a tunnel on the ``kind`` endpoint (refusal code and message), or
    None."""
    if hello.version != PROTOCOL_VERSION:
        return (
            "unsupported_version",
            f"protocol version {hello.version} is not supported (this server speaks "
            f"{PROTOCOL_VERSION}); upgrade the agent or the server",
        )
    if hello.kind != kind:
        return "wrong_kind", f"this endpoint is for {kind} agents, not {hello.kind[:32]}"
    if not hello.agent_id:
        return "missing_id", "the agent sent an empty id"
    try:
        check_hello(hello, limits)
    except OverLimit as exc:
        return OVER_LIMIT, str(exc)
    return None


async def _register(
    gateway: Gateway,
    record: AgentRecord,
    heartbeat: float,
    refuse: Callable[[str, str], Awaitable[None]],
) -> bool:
    """Add ``record`` to the registry; False (the agent refused) when a live agent holds its id.
    An old tunnel of the same id that does not answer within ``heartbeat`` is replaced."""
    kind, agent_id = record.kind, record.id
    try:
        gateway.registry.add(record)
        return True
    except DuplicateAgent:
        # Either two agents share an id, or this one restarted and its old tunnel has not been
        # found dead yet: ask the old one.
        existing = gateway.registry.get(kind, agent_id)
        if existing is not None and await existing.session.responsive(heartbeat):
            await refuse(
                "id_in_use",
                f"another {kind} agent with id {agent_id!r} is connected; "
                "give each agent its own CLIENT_ID",
            )
            return False
        if existing is not None:
            log.warning(
                "%s agent %s (%s): its old tunnel does not answer; the new connection replaces it",
                kind,
                existing.name,
                existing.id,
            )
            existing.session.close("replaced by a new connection with the same id")
    try:
        gateway.registry.add(record)
    except DuplicateAgent:  # yet another agent with this id got in meanwhile
        await refuse("id_in_use", f"another {kind} agent with id {agent_id!r} connected")
        return False
    return True


async def _run(
    gateway: Gateway,
    transport: ServerWebSocket,
    conn: TunnelConnection,
    record: AgentRecord,
    named_models: bool,
) -> None:
    """Welcome the registered agent and run its tunnel until it ends; the agent leaves the
    registry then, however it ended."""
    session = record.session
    settings = session.settings
    welcome = Welcome(
        version=PROTOCOL_VERSION,
        server_version=__version__,
        agent_id=record.id,
        heartbeat_interval=settings.heartbeat_interval,
        dead_after=settings.dead_after,
        window=settings.window,
        instance_id=gateway.cluster.instance_id,
        members=gateway.cluster.members(),
    )
    kind = record.kind
    try:
        await transport.send_message(conn.send(welcome))
        log.info(
            "%s agent %s (%s) connected from %s: %s",
            kind,
            record.name,
            record.id,
            websocket.remote_addr,
            describe(
                record.status,
                record.models,
                record.max_concurrency,
                named_models=named_models,
            ),
        )
        await session.run()
    except TransportClosed as exc:  # the agent left before the Welcome went out
        session.close(f"connection closed during the handshake ({exc.reason})")
    finally:
        gateway.registry.remove(record)
        log.info(
            "%s agent %s (%s) disconnected: %s", kind, record.name, record.id, session.closed_reason
        )


@attrs.define
class StatusUpdates:
    """Applies one agent's Status frames to the registry."""

    gateway: Gateway
    record: AgentRecord
    limits: AnnouncementLimits
    named_models: bool = True
    """The agent's models are named by clients (its log lines count them: :func:`describe`)."""
    log_budget: float = STATUS_LOG_BURST
    budget_at: float = attrs.field(factory=trio.current_time)

    def apply(self, frame: Status) -> None:
        """Check ``frame`` against the limits (raises OverLimit) and apply it; a Status that
        changes nothing costs nothing (no wake-ups, no log line)."""
        check_status(frame, self.limits)
        record = self.record
        announced = (frame.models, frame.max_concurrency, frame.status, frame.embedding_batch_size)
        if announced == (
            record.models,
            record.max_concurrency,
            record.status,
            record.embedding_batch_size,
        ):
            return
        self.gateway.registry.update(
            record,
            models=frame.models,
            max_concurrency=frame.max_concurrency,
            status=frame.status,
            embedding_batch_size=frame.embedding_batch_size,
        )
        now = trio.current_time()
        self.log_budget = min(
            STATUS_LOG_BURST, self.log_budget + (now - self.budget_at) * STATUS_LOG_RATE
        )
        self.budget_at = now
        level = logging.INFO if self.log_budget >= 1 else logging.DEBUG
        if level == logging.INFO:
            self.log_budget -= 1
        log.log(
            level,
            "%s agent %s: %s",
            record.kind,
            record.name,
            describe(
                frame.status,
                frame.models,
                frame.max_concurrency,
                named_models=self.named_models,
            ),
        )
