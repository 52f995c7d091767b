"""Idle MCP sessions (:mod:`nfrx.plugins.mcp.reaper`): one reaper per gateway, the MCP plugin's
run, sweeps every relay; relays over in-memory tunnels, on a mock clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from nfrx.config.model import ServerConfig
from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.plugin import McpPlugin
from nfrx.plugins.mcp.reaper import sweep_period
from nfrx.plugins.mcp.sessions import McpSession
from nfrx.server.registry import AgentRecord
from nfrx.server.runner import compose
from nfrx.transport.streams import IncomingStream
from tests.transport.helpers import open_tunnel

IDLE = 60.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.mark.parametrize(("idle", "period"), [(60, 15), (0.1, 0.25), (3600, 60)])
def test_the_sweep_period_is_a_quarter_of_the_idle_time_within_bounds(
    idle: float, period: float
) -> None:
    assert sweep_period(idle) == period


async def test_one_reaper_ends_the_idle_sessions_of_every_relay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gateway = compose(ServerConfig(plugins=("mcp",), mcp_session_idle=IDLE))
    relays = gateway.plugin(McpPlugin).relays
    deleted: list[tuple[str, str, str]] = []

    def provider(relay: str) -> Callable[[IncomingStream], Awaitable[None]]:
        async def handler(stream: IncomingStream) -> None:
            headers = dict(stream.request.headers)
            session = headers["mcp-session-id"]
            deleted.append((relay, stream.request.method, session))
            assert headers[wire.Meta.KIND] == "delete"
            await stream.send_response(200, (), end=True)

        return handler

    async with (
        open_tunnel(provider("r1")) as one,
        open_tunnel(provider("r2")) as two,
        trio.open_nursery() as nursery,
    ):
        for relay_id, tunnel in (("r1", one), ("r2", two)):
            record = AgentRecord(
                kind="mcp", id=relay_id, name=relay_id, version="t", session=tunnel.server
            )
            gateway.registry.add(record)
            state = relays.state(record)
            state.sessions[f"idle-{relay_id}"] = McpSession(f"idle-{relay_id}", "")
        busy = relays.state(record).sessions["busy"] = McpSession("busy", "")
        await nursery.start(gateway.plugin(McpPlugin).run)
        start = trio.current_time()
        while trio.current_time() - start < IDLE * 1.5:
            await trio.sleep(sweep_period(IDLE) / 2)
            busy.use()  # this one is used all along
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert sorted(deleted) == [("r1", "DELETE", "idle-r1"), ("r2", "DELETE", "idle-r2")]
    assert set(relays.states["r2"].sessions) == {"busy"}
