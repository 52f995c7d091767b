"""The runner composes the gateway from the one list of plugins: ``PLUGINS`` decides what is
mounted, run and reported. ``run_server`` in process, on 127.0.0.1 and a free port, read with a
real HTTP client."""

from __future__ import annotations

import functools
import json
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio import serve

from nfrx.config.model import ServerConfig
from nfrx.plugins import SERVER_PLUGINS
from nfrx.plugins.jobs.memory import MemoryJobStore
from nfrx.plugins.jobs.plugin import JobsPlugin
from nfrx.plugins.jobs.redis_store import RedisJobStore
from nfrx.plugins.keys.plugin import KeysPlugin
from nfrx.plugins.keys.service import KeysService
from nfrx.plugins.keys.shared import SharedKeysService
from nfrx.plugins.mcp.plugin import McpPlugin
from nfrx.plugins.transfer.plugin import TransferPlugin
from nfrx.server.runner import (
    LISTEN_BACKLOG,
    TCP_USER_TIMEOUT_MS,
    compose,
    hypercorn_config,
    run_server,
)

CAP = 30.0
"""Hang guard (real clock)."""


def test_compose_makes_the_enabled_plugins_and_the_always_on_ones() -> None:
    gateway = compose(ServerConfig(plugins=("asr", "LLM")))
    assert [plugin.name for plugin in gateway.plugins] == ["llm", "asr", "jobs", "transfer", "keys"]
    assert gateway.disabled_plugins == ("mcp", "docling")
    assert gateway.agent_kinds == ("llm", "asr")
    # Jobs offer the transfer plugin's channels: one registry of channels per gateway.
    assert gateway.plugin(JobsPlugin).service.channels is gateway.plugin(TransferPlugin).channels
    with pytest.raises(LookupError):
        gateway.plugin(McpPlugin)


def test_plugin_state_is_per_gateway() -> None:
    one, two = compose(ServerConfig()), compose(ServerConfig())
    assert one.plugin(McpPlugin).relays is not two.plugin(McpPlugin).relays
    assert one.plugin(JobsPlugin).service is not two.plugin(JobsPlugin).service
    # The gateway's client-key hook is its own keys plugin's.
    assert one.client_keys is one.plugin(KeysPlugin).service
    assert two.client_keys is two.plugin(KeysPlugin).service


def test_with_redis_url_the_plugins_keep_jobs_transfers_and_keys_in_redis() -> None:
    alone = compose(ServerConfig())
    assert type(alone.plugin(KeysPlugin).service) is KeysService
    assert isinstance(alone.plugin(JobsPlugin).service.store, MemoryJobStore)
    assert alone.plugin(TransferPlugin).homes.cluster is None
    shared = compose(ServerConfig(redis_url="redis://127.0.0.1:1", instance_id="a"))
    keys = shared.plugin(KeysPlugin).service
    assert isinstance(keys, SharedKeysService)
    assert shared.client_keys is keys
    jobs = shared.plugin(JobsPlugin).service
    assert isinstance(jobs.store, RedisJobStore)
    homes = shared.plugin(TransferPlugin).homes
    assert jobs.homes is homes
    assert homes.cluster is shared.cluster


def test_compose_refuses_an_unknown_plugin() -> None:
    with pytest.raises(ValueError, match="unknown plugin 'jobs'"):
        compose(ServerConfig(plugins=("llm", "jobs")))


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """``run_server`` with ``settings``; its STATE_DIR (client keys) a new temporary directory."""
    state_dir = tempfile.TemporaryDirectory(prefix="nfrx-state-")
    config = ServerConfig(
        host="127.0.0.1", port=0, api_key="ak", state_dir=state_dir.name, **settings
    )
    with state_dir, trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(run_server, config)
            headers = {"Authorization": "Bearer ak"}
            async with httpx.AsyncClient(base_url=binds[0], headers=headers) as client:
                yield client
            nursery.cancel_scope.cancel()


async def test_only_enabled_plugins_are_mounted_and_reported() -> None:
    async with serving(plugins=("llm",)) as client:
        health = (await client.get("/healthz")).json()
        assert health == {"status": "ok", "agents": {"llm": 0}}
        state = (await client.get("/api/state")).json()
        assert state["server"]["plugins"] == ["llm"]
        assert set(state["plugins"]) == {"llm", "transfer", "jobs"}
        assert (await client.get("/", headers={"Accept": "application/json"})).json()["apis"] == {
            "llm": "/api/llm/v1"
        }
        document = (await client.get("/api/client/openapi.json")).json()
        assert [path for path in document["paths"] if "/mcp/" in path] == []
        assert "/api/llm/v1/chat/completions" in document["paths"]
        metrics = (await client.get("/metrics")).text
        assert 'nfrx_agents_connected{plugin="llm"} 0.0' in metrics
        assert 'plugin="mcp"' not in metrics
        assert "nfrx_mcp_exchanges" not in metrics
        assert "nfrx_jobs_created_total" in metrics  # jobs and transfer are always on
        assert "nfrx_transfer_bytes_total" in metrics
        refused = await client.post("/api/mcp/id/r1", json={})
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "plugin_disabled"
        assert (await client.get("/api/llm/v1/models")).status_code == 200


async def test_every_plugin_by_default() -> None:
    async with serving() as client:
        health = (await client.get("/healthz")).json()
        assert set(health["agents"]) == set(SERVER_PLUGINS)
        state = (await client.get("/api/state")).json()
        assert state["server"]["plugins"] == list(SERVER_PLUGINS)
        assert list(state["plugins"]) == [*SERVER_PLUGINS, "jobs", "transfer"]
        assert state["plugins"]["mcp"]["relays"] == []
        metrics = (await client.get("/metrics")).text
        assert "# HELP nfrx_mcp_exchanges_total " in metrics


async def test_no_agent_plugin_at_all() -> None:
    async with serving(plugins=("none",), transfer_ttl=0.05) as client:
        assert (await client.get("/healthz")).json()["agents"] == {}
        state = (await client.get("/api/state")).json()
        assert state["server"]["plugins"] == []
        assert set(state["plugins"]) == {"transfer", "jobs"}
        # The always-on APIs are mounted and their background work runs: a channel nobody
        # attaches to is expired by the transfer plugin's run.
        async with client.stream("GET", "/api/state/stream") as snapshots:
            assert (await client.post("/api/transfer")).status_code == 200
            async for line in snapshots.aiter_lines():
                if line.startswith("data: "):
                    transfer = json.loads(line.removeprefix("data: "))["plugins"]["transfer"]
                    if transfer["expired_total"] == 1:
                        break
        assert transfer["open"] == 0


# -- hypercorn internals the runner relies on ----------------------------------------------------


async def test_hypercorn_listens_on_the_sockets_of_create_sockets_with_the_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tuned listener (``_TunedConfig.create_sockets``: keep-alive, TCP_USER_TIMEOUT) and
    ``LISTEN_BACKLOG`` reach the kernel only because hypercorn's trio ``serve`` makes its
    sockets with ``config.create_sockets()``, reads ``Sockets.insecure_sockets`` and calls
    ``listen(config.backlog)`` on them."""
    listened: list[tuple[socket.socket, int]] = []
    original = socket.socket.listen

    def listen(self: socket.socket, backlog: int = 0) -> None:
        listened.append((self, backlog))
        original(self, backlog)

    monkeypatch.setattr(socket.socket, "listen", listen)
    config = hypercorn_config(ServerConfig(host="127.0.0.1", port=0))
    stop = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
            )
            [(sock, backlog)] = listened
            assert backlog == LISTEN_BACKLOG
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            user_timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            assert user_timeout == TCP_USER_TIMEOUT_MS
            stop.set()
