"""``nfrx serve``'s process: the composition of a gateway with its plugins, the root nursery,
hypercorn, and the signal-driven drain.

This is where the plugins meet the core: :func:`compose` hands the gateway the plugins of the one
list (:mod:`nfrx.plugins`) that ``PLUGINS`` enables, and the always-on ones; nothing else in the
core knows a plugin by name.

Task tree (every task has this one owner)::

    run_server
    +-- each plugin's background work (MCP: idle sessions; jobs: expiry and leases; transfer:
    |   channel TTLs), started before the listener opens
    +-- hypercorn serve (HTTP API + agent WebSockets; one task per connection inside it), on PORT
    |   (shared with this host's other instances with REUSE_PORT) and AGENT_PORT when set
    +-- hypercorn serve on METRICS_PORT (only /metrics; when set), stopped by the same shutdown
    +-- the cluster (REDIS_URL: membership, shared queue order, fleet view; nfrx.cluster),
    |   joined once hypercorn listens, left when the server stops
    +-- signal watcher: 1st SIGTERM/SIGINT -> drain, 2nd -> close the tunnels (in-flight clients
    |   get a final error), then cancel everything after STOP_GRACE
    +-- drainer (after the first signal): waits for in-flight requests up to DRAIN_TIMEOUT,
        closes the agent tunnels, then triggers hypercorn's shutdown
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import socket
from typing import TYPE_CHECKING, Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from nfrx import plugins
from nfrx.protocol import Drain
from nfrx.server import reason_phrase
from nfrx.server.app import create_app
from nfrx.server.gateway import Gateway
from nfrx.server.metrics import metrics_asgi
from nfrx.transport.session import CLOSE_GOING_AWAY

if TYPE_CHECKING:
    from nfrx.config.model import ServerConfig

log = logging.getLogger("nfrx.server")

TCP_USER_TIMEOUT_MS = 30_000
"""A peer that stops acknowledging data for this long is dropped (hypercorn's sends cannot be
cancelled from the app, so the kernel must bound them)."""

LISTEN_BACKLOG = 4096
"""Connections the kernel queues before nfrx accepts them (capped by net.core.somaxconn).
hypercorn's default of 100 overflows when a few thousand clients connect at once: their
handshakes are dropped and retried after 1, 3, 7... s, or the connection is reset."""


class _TunedConfig(HypercornConfig):
    def create_sockets(self) -> Any:
        sockets = super().create_sockets()
        for sock in sockets.insecure_sockets + sockets.secure_sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)
        return sockets


def hypercorn_config(
    config: ServerConfig, bound: list[socket.socket] | None = None
) -> HypercornConfig:
    """hypercorn's settings for ``config``: PORT, and AGENT_PORT when set; ``bound``: sockets
    bound to them already (REUSE_PORT), in that order."""
    hc = _TunedConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    if bound:
        hc.bind = [f"fd://{sock.fileno()}" for sock in bound]
    else:
        hc.bind = [f"{host}:{config.port}"]
        if config.agent_port:
            hc.bind.append(f"{host}:{config.agent_port}")
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # our handlers, not a second stream
    hc.graceful_timeout = 2.0
    hc.backlog = LISTEN_BACKLOG
    hc.websocket_max_message_size = 16 * 1024 * 1024
    hc.include_server_header = False
    if config.tls_cert:  # the loader checked that both files are there and fit together
        hc.certfile = config.tls_cert
        hc.keyfile = config.tls_key
    return hc


def compose(config: ServerConfig) -> Gateway:
    """The gateway of ``config``, with the plugins its ``PLUGINS`` enables and the always-on ones
    (raises ValueError for a ``PLUGINS`` naming none of them: the CLI checked it before)."""
    classes, disabled = plugins.server_plugins(config.plugins)
    return Gateway(config, classes, disabled=disabled)


def reused_port_sockets(config: ServerConfig) -> list[socket.socket]:
    """PORT (and AGENT_PORT) bound with SO_REUSEPORT (REUSE_PORT): other processes of this user
    on this host may bind them too, and the kernel spreads incoming connections between them."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sockets: list[socket.socket] = []
    for port in (config.port, config.agent_port) if config.agent_port else (config.port,):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((config.host, port))
        except OSError:
            sock.close()
            for other in sockets:
                other.close()
            raise
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


async def run_server(
    config: ServerConfig, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until a signal ends it; ``task_status.started`` gets the bound URLs."""
    reason_phrase.install()
    gateway = compose(config)
    app = create_app(gateway)
    bound = reused_port_sockets(config) if config.reuse_port else None
    shutdown = trio.Event()
    if not config.api_key and not config.api_http_roles:
        log.warning("API_KEY is not set: the API is OPEN to anyone who can reach this server")
    if not config.client_key and not config.client_http_roles:
        log.warning("CLIENT_KEY is not set: ANY agent can connect and serve requests")
    if config.api_key and config.api_key == config.client_key:
        log.warning("API_KEY and CLIENT_KEY are equal: clients could register as agents")
    for setting, roles, grants in (
        ("API_HTTP_ROLES", config.api_http_roles, "API access"),
        ("CLIENT_HTTP_ROLES", config.client_http_roles, "agent tunnels"),
        ("ADMIN_HTTP_ROLES", config.admin_http_roles, "the admin API (client keys)"),
    ):
        if roles:
            log.warning(
                "%s is set: the X-User-Roles request header grants %s; anyone who can reach "
                "this port can send it, so only run this behind a trusted proxy that sets it and "
                "strips what clients send",
                setting,
                grants,
            )
    async with trio.open_nursery() as nursery:
        for plugin in gateway.plugins:
            await nursery.start(plugin.run)

        async def run_hypercorn(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(
                app,
                hypercorn_config(config, bound),
                shutdown_trigger=shutdown.wait,
                mode="asgi",
                task_status=task_status,
            )
            await gateway.cluster.leave()  # while the rest still runs: the others hear of it
            nursery.cancel_scope.cancel()

        binds: list[str] = await nursery.start(run_hypercorn)
        if config.metrics_port:
            metrics_binds: list[str] = await nursery.start(
                functools.partial(
                    serve,
                    metrics_asgi(gateway.metrics),
                    hypercorn_config(attrs.evolve(config, port=config.metrics_port, agent_port=0)),
                    shutdown_trigger=shutdown.wait,
                    mode="asgi",
                )
            )
            log.info("metrics on %s", ", ".join(f"{bind}/metrics" for bind in metrics_binds))
        await nursery.start(gateway.cluster.run, binds)
        # Before the line that says it is up: from then on a signal drains (a worker of
        # --workers whose parent is killed that early leaves the gateway, as later).
        await nursery.start(_watch_signals, gateway, shutdown, nursery, config.drain_timeout)
        log.info(
            "nfrx serve listening on %s (plugins: %s)",
            ", ".join(binds),
            ", ".join(p.name for p in gateway.plugins if not p.always_on) or "none",
        )
        task_status.started(binds)


async def _watch_signals(
    gateway: Gateway,
    shutdown: trio.Event,
    nursery: trio.Nursery,
    drain_timeout: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if gateway.draining:
                # In-flight clients get a clean end (a final SSE error event, or a 502 if nothing
                # was sent yet) from their tunnels closing; then everything stops.
                log.warning("%s again: stopping now", name)
                _close_tunnels(gateway, "server stopping now")
                shutdown.set()
                nursery.start_soon(_stop_after, nursery.cancel_scope, STOP_GRACE)
                return
            log.info("%s: draining (up to %g s for in-flight requests)", name, drain_timeout)
            gateway.draining = True
            gateway.cluster.drain_started()
            nursery.start_soon(functools.partial(_drain, gateway, shutdown, drain_timeout))


async def _drain(gateway: Gateway, shutdown: trio.Event, drain_timeout: float) -> None:
    registry = gateway.registry
    agents = [a for kind in gateway.agent_kinds for a in registry.agents(kind)]
    for agent in agents:
        agent.session.send_control(Drain(reason="server shutting down", deadline=drain_timeout))
    timeout = math.inf if drain_timeout < 0 else drain_timeout
    with trio.move_on_after(timeout) as scope:
        said = 0
        while (busy := sum(a.inflight for a in agents)) > 0:
            if busy != said:  # registry changes that leave the count as it is say nothing new
                log.info("waiting for %d in-flight request(s)", busy)
                said = busy
            await registry.wait_changed()
    if scope.cancelled_caught:
        log.warning("drain timeout: cancelling the requests still in flight")
    _close_tunnels(gateway, "server shutting down")
    shutdown.set()


STOP_GRACE = 1.0
"""Seconds a forced stop gives in-flight responses to send their final error event."""


def _close_tunnels(gateway: Gateway, reason: str) -> None:
    for kind in gateway.agent_kinds:
        for agent in gateway.registry.agents(kind):
            agent.session.close(reason, CLOSE_GOING_AWAY)


async def _stop_after(scope: trio.CancelScope, grace: float) -> None:
    await trio.sleep(grace)
    scope.cancel()
