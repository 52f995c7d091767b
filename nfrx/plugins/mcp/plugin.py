"""The MCP relay plugin (:mod:`nfrx.server.plugin`): public Streamable HTTP at ``/api/mcp/id/{id}``
(:mod:`.server`), agents next to one MCP provider each (:mod:`.agent`).

Per gateway it owns the relays' sessions, calls and exchange counts (:class:`McpRelays`) and one
background task, the idle-session reaper (:mod:`.reaper`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import attrs
import trio

from nfrx.plugins.mcp.reaper import sweep_forever
from nfrx.plugins.mcp.sessions import McpRelays
from nfrx.server.plugin import AgentBackend, Plugin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from prometheus_client.registry import Collector
    from quart import Blueprint

    from nfrx.config.agents import AgentConfig
    from nfrx.server.gateway import Gateway
    from nfrx.server.openapi import ApiPart
    from nfrx.server.state import Clocks


class McpPlugin(Plugin):
    name = "mcp"
    agent_kind = "mcp"
    api_root = "/api/mcp/id/{id}"

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.relays = McpRelays(gateway)

    def blueprint(self) -> Blueprint:
        from nfrx.plugins.mcp.server import McpRelayRoutes

        return McpRelayRoutes(self.gateway, self.relays).blueprint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The idle-session reaper: one for every relay of the gateway."""
        await sweep_forever(self.gateway, self.relays, task_status=task_status)

    def state(self, section: dict[str, Any], clocks: Clocks) -> dict[str, Any]:
        """The agents' section and ``relays``: MCP relays are addressed by id, not by model, so
        their sessions and calls instead -- this instance's (with several instances, the
        section's agents are the whole gateway's)."""
        from nfrx.server.state import rfc3339

        status = {agent_state["id"]: agent_state["status"] for agent_state in section["agents"]}
        relays = [
            {
                **self.relays.describe(agent, wall=clocks.wall, now=clocks.trio, timestamp=rfc3339),
                "status": status[agent.id],
            }
            for agent in self.gateway.registry.agents(self.name)
        ]
        return {**section, "relays": relays}

    def collectors(self) -> Iterable[Collector]:
        return (self.relays.exchanges,)

    @classmethod
    def api(cls) -> ApiPart:
        from nfrx.plugins.mcp.openapi import api

        return api()

    @classmethod
    @contextlib.asynccontextmanager
    async def agent_backend(
        cls, config: AgentConfig, args: Sequence[str] | None = None
    ) -> AsyncIterator[AgentBackend]:
        """The provider ``config`` names (``args``: the stdio provider's, replacing
        ``MCP_STDIO_ARGS``): a Streamable HTTP tunnel or a stdio bridge whose processes run for
        the block's length. The tunnel's concurrency is ``MCP_MAX_INFLIGHT`` (the server counts
        only JSON-RPC requests against it); ``MAX_CONCURRENCY`` has no say for MCP relays."""
        from nfrx.config.agents import McpAgentConfig
        from nfrx.plugins.mcp.agent import open_provider

        assert isinstance(config, McpAgentConfig)
        runtime_config = attrs.evolve(config, max_concurrency=config.mcp_max_inflight)
        async with open_provider(config, args) as (backend, url):
            yield AgentBackend(backend, url, runtime_config)
