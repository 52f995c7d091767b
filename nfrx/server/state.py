"""The server's state for people and tools: ``/api/state`` (JSON), ``/api/state/stream`` (SSE) and
the dashboard page (``/state``, and its views ``/state/keys`` and ``/state/connect``).

:func:`build_snapshot` is pure: it reads the gateway (registry, queue, usage, its plugins' sections)
and the clocks it is given, and returns the JSON-ready dict; nothing else here decides what the
state says. It lists the plugins the server has, and only those: ``server.plugins`` names the agent
plugins ``PLUGINS`` enabled, and ``plugins`` has a section for each of them (:func:`agents_section`,
which the plugin may add to: MCP's relays) and for each always-on service plugin (a shape of its
own: jobs, transfer). The stream sends one snapshot at once, then one after every registry change,
coalesced to at most one per ``min_interval``; it ends by itself when the server starts draining (so
the drain never waits for a dashboard), and quart-trio cancels it when the client leaves.

The two API routes take the API key like ``/api/llm`` but stay readable while draining (watching a
drain is the point of a state page); the page itself is public: it holds no data, and asks the
user for the key. Besides ``plugins``, a snapshot has the sections of plugins that are no service
of their own (:attr:`Plugin.top_level_state <nfrx.server.plugin.Plugin.top_level_state>`: the
client keys with their usage, ``keys``) and the recent traffic the dashboard charts
(``traffic``, :mod:`nfrx.server.traffic`).
"""

from __future__ import annotations

import functools
import json
import time
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Blueprint, Response

from nfrx._build import build_info
from nfrx.cluster.directory import merge_agents
from nfrx.server.registry import AgentStatus
from nfrx.server.usage import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord

MIN_INTERVAL = 1.0
"""Seconds between two snapshots on a stream, at least (changes in between are coalesced)."""

KEEPALIVE_INTERVAL = 15.0
"""Seconds of silence after which a stream sends a keep-alive comment."""

KEEPALIVE = b": keep-alive\n\n"


@attrs.frozen(kw_only=True)
class ServerInfo:
    """What the state says about the server process itself (fixed when the app is built)."""

    version: str
    build_sha: str
    build_date: str
    started_at: float
    """Wall-clock start (``time.time()``)."""
    started_monotonic: float
    """``time.monotonic()`` at the start: uptime does not jump with the wall clock."""

    @classmethod
    def now(cls) -> ServerInfo:
        build = build_info()
        return cls(
            version=build["version"],
            build_sha=build["sha"],
            build_date=build["date"],
            started_at=time.time(),
            started_monotonic=time.monotonic(),
        )


@attrs.frozen(kw_only=True)
class Clocks:
    """The instant a snapshot describes, on each clock the state's sources use."""

    wall: float
    """``time.time()``"""
    monotonic: float
    """``time.monotonic()``"""
    trio: float
    """``trio.current_time()`` (tunnel sessions stamp heartbeats with it)."""

    @classmethod
    def read(cls) -> Clocks:
        return cls(wall=time.time(), monotonic=time.monotonic(), trio=trio.current_time())


def rfc3339(timestamp: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix: ``2025-01-02T03:04:05.678Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def agent_status(agent: AgentRecord) -> str:
    """``not_ready`` / ``draining`` as the agent reports, else ``working`` or ``idle``."""
    if agent.status in (AgentStatus.NOT_READY, AgentStatus.DRAINING):
        return agent.status
    return "working" if agent.inflight > 0 else "idle"


def agent_document(agent: AgentRecord, clocks: Clocks) -> dict[str, Any]:
    """One agent's entry in the state (and in the other instances' fleet view)."""
    processing_ms = agent.busy_seconds_total * 1000.0
    finished = agent.processed_total + agent.failures_total + agent.cancelled_total
    last_heard = clocks.wall - (clocks.trio - agent.session.last_heard)
    return {
        "id": agent.id,
        "name": agent.name,
        "version": agent.version,
        "status": agent_status(agent),
        "models": sorted(agent.models),
        "max_concurrency": agent.max_concurrency,
        "inflight": agent.inflight,
        "processed_total": agent.processed_total,
        "failures_total": agent.failures_total,
        "cancelled_total": agent.cancelled_total,
        "processing_ms_total": round(processing_ms, 3),
        "avg_processing_ms": round(processing_ms / finished, 3) if finished else 0.0,
        "input_tokens_total": agent.usage.input_tokens,
        "output_tokens_total": agent.usage.output_tokens,
        "embedding_batch_size": agent.embedding_batch_size,
        "connected_at": rfc3339(agent.connected_at),
        "last_heartbeat": rfc3339(last_heard),
    }


def agents_section(gateway: Gateway, kind: str, clocks: Clocks) -> dict[str, Any]:
    """The core's part of an agent plugin's section: the queue, its agents and their models."""
    agents = gateway.registry.agents(kind)
    local = [agent_document(agent, clocks) for agent in agents]
    # With several instances: every agent of the gateway once, with the instances it is on.
    states = merge_agents(kind, local, gateway.cluster.fleet())
    summary = {"connected": len(states), "working": 0, "idle": 0, "not_ready": 0, "draining": 0}
    for state in states:
        summary[state["status"]] += 1
    # Every model a connected agent lists, and every model that relayed tokens (its totals are
    # cumulative, so it stays after its agents leave, with no agents).
    owners: dict[str, list[str]] = {}
    for agent in agents:
        for model in agent.models:
            owners.setdefault(model, []).append(agent.name)
    for usage_kind, model in gateway.usage_by_model:
        if usage_kind == kind:
            owners.setdefault(model, [])
    models = []
    for model in sorted(owners):
        usage = gateway.usage_by_model.get((kind, model), Usage())
        models.append(
            {
                "id": model,
                "agents": sorted(owners[model]),
                "input_tokens_total": usage.input_tokens,
                "output_tokens_total": usage.output_tokens,
            }
        )
    queue = gateway.queue
    return {
        # One dispatch queue serves every kind that queues (the other instances' waiters
        # count: the order is shared; the capacity is this instance's).
        "queue": {"length": len(queue) + queue.order.waiting(), "capacity": queue.capacity},
        "summary": summary,
        "agents": states,
        "models": models,
    }


def build_snapshot(gateway: Gateway, server: ServerInfo, clocks: Clocks) -> dict[str, Any]:
    """The ``/api/state`` document (pure: no I/O, no clock reads of its own).

    With several instances (``REDIS_URL``) it also lists the ``instances`` and every agent of
    the gateway (see :mod:`nfrx.cluster.directory`); ``server`` is this instance.
    """
    fleet = gateway.cluster.fleet()
    sections: dict[str, Any] = {}
    tops: dict[str, Any] = {}
    for plugin in gateway.plugins:
        kind = plugin.agent_kind
        section = agents_section(gateway, kind, clocks) if kind is not None else {}
        (tops if plugin.top_level_state else sections)[plugin.name] = plugin.state(section, clocks)
    snapshot: dict[str, Any] = {
        "server": {
            "version": server.version,
            "build_sha": server.build_sha,
            "build_date": server.build_date,
            "started_at": rfc3339(server.started_at),
            "uptime_seconds": round(max(0.0, clocks.monotonic - server.started_monotonic), 3),
            "draining": gateway.draining,
            "plugins": [p.name for p in gateway.plugins if not p.always_on],
        },
        "plugins": sections,
        **tops,
        # Not a plugin's: the recent traffic (the dashboard's charts).
        "traffic": gateway.traffic.state(clocks.wall),
    }
    if fleet is not None:
        snapshot["server"]["instance"] = fleet.instance_id
        snapshot["server"]["degraded"] = fleet.degraded
        snapshot["instances"] = [
            {**view, "started_at": rfc3339(view["started_at"])} for view in fleet.document()
        ]
    return snapshot


def _fingerprint(gateway: Gateway, snapshot: dict[str, Any]) -> str:
    """The snapshot without what changes on its own (uptime, heartbeats, each plugin's
    :meth:`~nfrx.server.plugin.Plugin.steady` part): equal fingerprints mean nothing a reader
    cares about changed."""
    stable = {**snapshot, "server": {**snapshot["server"], "uptime_seconds": None}}
    stable["plugins"] = {}
    for plugin in gateway.plugins:
        if plugin.top_level_state:
            section, where = snapshot[plugin.name], stable
        else:
            section, where = snapshot["plugins"][plugin.name], stable["plugins"]
        if "agents" in section:
            agents = [{**agent, "last_heartbeat": None} for agent in section["agents"]]
            section = {**section, "agents": agents}
        where[plugin.name] = plugin.steady(section)
    # The series roll over with the clock: only the totals say that something happened.
    stable["traffic"] = snapshot["traffic"]["totals"]
    return json.dumps(stable, sort_keys=True)


def _event(snapshot: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(snapshot, separators=(",", ":")).encode() + b"\n\n"


async def _wait_for_change(gateway: Gateway, seen: int) -> None:
    """Return after the next registry change (at once if there was one since its version was
    ``seen``), or at once if the drain started (before or meanwhile)."""
    if gateway.draining:
        return
    async with trio.open_nursery() as nursery:

        async def first(wait: Callable[[], Awaitable[None]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, functools.partial(gateway.registry.wait_changed, seen))
        nursery.start_soon(first, gateway.drain_started.wait)


async def snapshot_stream(
    gateway: Gateway,
    server: ServerInfo,
    *,
    min_interval: float = MIN_INTERVAL,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
) -> AsyncIterator[bytes]:
    """SSE bytes: a snapshot now, then after changes (at most one per ``min_interval``), a
    keep-alive comment after ``keepalive_interval`` of silence. Returns when the drain starts;
    the caller cancels it (or stops iterating) to end it sooner. Holds no resources."""
    # The registry's version is read before each snapshot is built: a change made while the
    # snapshot is built or sent (the reader holds this generator) wakes the next wait at once.
    seen = gateway.registry.version
    snapshot = build_snapshot(gateway, server, Clocks.read())
    sent = _fingerprint(gateway, snapshot)
    yield _event(snapshot)
    last_write = last_snapshot = trio.current_time()
    while True:
        keepalive_at = last_write + keepalive_interval
        with trio.move_on_at(keepalive_at):
            await _wait_for_change(gateway, seen)
        # Coalesce: whatever else changes until the interval has passed goes in this snapshot.
        with trio.move_on_at(last_snapshot + min_interval):
            await gateway.drain_started.wait()
        if gateway.draining:
            return
        seen = gateway.registry.version
        snapshot = build_snapshot(gateway, server, Clocks.read())
        fingerprint = _fingerprint(gateway, snapshot)
        now = trio.current_time()
        if fingerprint != sent:
            sent = fingerprint
            yield _event(snapshot)
            last_write = last_snapshot = now
        elif now >= keepalive_at:
            yield KEEPALIVE
            last_write = now


DASHBOARD_VIEWS = {"/state": "dashboard", "/state/keys": "keys", "/state/connect": "connect"}
"""The dashboard's views (overview, client keys, connect an agent): path -> endpoint."""


def _dashboard_html() -> bytes:
    return resources.files("nfrx.server").joinpath("dashboard.html").read_bytes()


def blueprint(gateway: Gateway) -> Blueprint:
    """``/api/state``, ``/api/state/stream`` and ``/state`` for ``gateway``."""
    bp = Blueprint("state", __name__)
    server = ServerInfo.now()
    page = _dashboard_html()

    @bp.get("/api/state")
    async def state() -> Response:
        gateway.check_api_key()
        response = Response(
            json.dumps(build_snapshot(gateway, server, Clocks.read())),
            content_type="application/json",
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/api/state/stream")
    async def stream() -> Response:
        gateway.check_api_key()
        response = Response(
            snapshot_stream(gateway, server),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # Quart's 60 s default would cut every dashboard off
        return response

    async def dashboard() -> Response:
        response = Response(page, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    # One page; its script shows the view its path names.
    for path, endpoint in DASHBOARD_VIEWS.items():
        bp.add_url_rule(path, endpoint, dashboard, methods=["GET"])
    return bp
