"""Idle MCP sessions: forgotten after ``MCP_SESSION_IDLE`` and ended at the provider (DELETE).

:func:`sweep_forever` is the MCP plugin's background task (:meth:`McpPlugin.run
<nfrx.plugins.mcp.plugin.McpPlugin.run>`): one per gateway, owned by the server's root nursery,
sweeping every relay's sessions once per period. A reaped session's calls are stopped at once
(their clients get ``MCP_SESSION_NOT_FOUND``), and the DELETE upstream is best effort and
bounded: it runs in the sweeper's nursery, and a tunnel that ends under it ends it. With several
instances, a session another instance used within ``MCP_SESSION_IDLE`` is only forgotten here,
not ended at the provider (``gateway.cluster``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from nfrx.plugins.mcp import wire
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from nfrx.plugins.mcp.sessions import McpRelays, McpSession
    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord

KIND: Final = "mcp"
DELETE_TIMEOUT: Final = 10.0
"""Seconds the reaper waits for the provider to answer its DELETE of an idle session."""

log = logging.getLogger("nfrx.mcp")


def sweep_period(idle: float) -> float:
    """Seconds between sweeps for ``MCP_SESSION_IDLE`` = ``idle``: a quarter of it, within
    0.25-60 s (a session is reaped at most a period late)."""
    return min(60.0, max(0.25, idle / 4))


async def sweep_forever(
    gateway: Gateway,
    relays: McpRelays,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reap idle sessions of every relay once per :func:`sweep_period`, until cancelled."""
    idle = gateway.config.mcp_session_idle
    period = sweep_period(idle)
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            await trio.sleep(period)
            for agent in gateway.registry.agents(KIND):
                state = relays.states.get(agent.id)
                if state is None or state.tunnel is not agent.session:
                    continue
                for session in state.idle_sessions(idle):
                    log.info(
                        "MCP session %s... on relay %s idle for %g s: ended",
                        session.id[:8],
                        agent.id,
                        idle,
                    )
                    nursery.start_soon(_delete_upstream, gateway, agent, session)


async def _delete_upstream(gateway: Gateway, agent: AgentRecord, session: McpSession) -> None:
    """Best effort: ask the relay to end a reaped session at the provider (bounded), unless
    another instance of the gateway uses it."""
    if await gateway.cluster.session_in_use_elsewhere(agent.id, session.id):
        log.info("MCP session %s... is in use through another instance: kept", session.id[:8])
        return
    gateway.cluster.session_ended(agent.id, session.id)
    headers: list[tuple[str, str]] = [
        ("mcp-session-id", session.id),
        (wire.Meta.ERA, wire.LEGACY),
        (wire.Meta.KIND, "delete"),
    ]
    if session.protocol_version:
        headers.append(("mcp-protocol-version", session.protocol_version))
    try:
        stream = agent.session.open_stream(
            "DELETE", "/", tuple(headers), timeout=DELETE_TIMEOUT, end=True, slot=False
        )
    except TunnelClosed:  # nothing left to end
        return
    try:
        with trio.move_on_after(DELETE_TIMEOUT):
            await stream.receive_response()
            while await stream.receive_some():
                pass
    except (StreamReset, TunnelClosed):  # best effort
        pass
    finally:
        stream.reset()
