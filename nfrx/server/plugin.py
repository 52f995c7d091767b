"""The plugin interface: all the server core and the agent commands know of a plugin.

A plugin is an object the core iterates, never a module the core imports by name (a test keeps
it so: ``tests/server/test_plugin_imports.py``). The one list of plugins is :mod:`nfrx.plugins`;
only the composition -- ``nfrx serve``'s runner and the agent commands -- reads it and hands the
plugins over. ``PLUGINS`` decides which agent plugins a server has; the service plugins (jobs and
transfer: no agents, APIs of their own) are always on (:attr:`Plugin.always_on`). What a server
has is what it mounts, runs and reports: its routes, ``/healthz``, ``/api/state``, ``/metrics``,
the OpenAPI document and the dashboard list those plugins only.

Lifecycle, server side. A plugin object belongs to one :class:`~nfrx.server.gateway.Gateway`
and owns the state it keeps for it (MCP's relays and sessions, the jobs store, the transfer
channels); nothing is kept at class level, so two gateways in one process (tests) share nothing.

1. ``Plugin(gateway)`` -- made by the gateway, in the list's order, before anything runs: it
   builds its state and may look up another plugin of the server (:meth:`Gateway.plugin
   <nfrx.server.gateway.Gateway.plugin>`, which makes that one first if it comes later in the
   list; jobs uses transfer's channels). Two plugins that look each other up are an error.
2. :meth:`Plugin.blueprint` -- its routes (today a Quart blueprint), mounted once by the app
   factory (:func:`nfrx.server.app.create_quart_app`). A plugin that serves hot routes as plain
   ASGI in front of Quart (a later issue) gets a second method for those, next to this one.
3. :meth:`Plugin.run` -- its background tasks (MCP's session reaper, jobs' deadlines, transfer
   expiry), started once in the server's root nursery before the listener opens; it calls
   ``task_status.started()`` when the plugin is usable and runs until the server cancels it.
4. While the server runs: :meth:`Plugin.state` (its section of ``/api/state``; called on every
   snapshot, so pure and cheap), :meth:`Plugin.collectors` (its ``/metrics`` series, registered
   once in the gateway's registry and read at each scrape) and :meth:`Plugin.api` (its part of
   the OpenAPI document).

Per-gateway state sits behind the plugin's own objects (the jobs store is an interface with a
memory implementation), so a later Redis-backed scale-out swaps those, not this interface.

Agent side: :meth:`Plugin.agent_backend` (a class method: an agent has no gateway) opens what
``nfrx <name>`` serves -- the :class:`~nfrx.agent.runtime.Backend` the agent runtime relays to.

Plugin classes import their server and agent halves inside these methods, so that an agent never
loads the server's web stack and ``nfrx --help`` loads no plugin at all.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence
    from contextlib import AbstractAsyncContextManager

    import httpx
    from prometheus_client.registry import Collector
    from quart import Blueprint

    from nfrx.agent.runtime import Backend
    from nfrx.config.agents import AgentConfig
    from nfrx.server.gateway import Gateway
    from nfrx.server.openapi import ApiPart
    from nfrx.server.state import Clocks


@attrs.frozen
class AgentBackend:
    """What an agent serves, as :meth:`Plugin.agent_backend` opens it."""

    backend: Backend
    url: str
    """Where the backend is, for the agent's log lines and status (URLs are redacted there)."""
    config: AgentConfig
    """The config the agent runtime runs with (a plugin may adjust it: MCP relays take their
    concurrency from ``MCP_MAX_INFLIGHT``)."""


class Plugin:
    """Base class of every plugin (see the module docstring); a subclass overrides what its
    plugin has."""

    name: ClassVar[str]
    """What ``PLUGINS`` calls it; its key in ``/api/state``'s ``plugins``."""
    agent_kind: ClassVar[str | None] = None
    """The kind of agent its ``/api/<kind>/connect`` route accepts (the Hello's ``kind``); its
    agents are kept in the registry under it. None: a plugin without agents."""
    serves_models: ClassVar[bool] = False
    """Its agents serve models clients name (LLM, ASR); Docling agents announce one pseudo-model
    and MCP relays none, so people are not told model counts about those."""
    always_on: ClassVar[bool] = False
    """Mounted whatever ``PLUGINS`` says (and not named in it): jobs and transfer."""
    api_root: ClassVar[str | None] = None
    """Where its client API starts (``GET /`` lists it); None: not listed."""
    top_level_state: ClassVar[bool] = False
    """Its ``/api/state`` section is a key of the document itself, named like it, not one of
    ``plugins``: what it reports is about the whole server (the client keys)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def blueprint(self) -> Blueprint:
        """Its routes, with their own admission checks (called once, by the app factory)."""
        raise NotImplementedError

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Its background tasks, until cancelled; ``task_status.started()`` once usable. The
        default has none and returns at once."""
        task_status.started()

    def state(self, section: dict[str, Any], clocks: Clocks) -> dict[str, Any]:
        """Its section of ``/api/state`` (in ``plugins``, or see :attr:`top_level_state`).
        ``section`` is what the core knows: for an agent plugin
        the queue, the agents and the models (:func:`nfrx.server.state.agents_section`), else
        empty. Pure: no I/O, no clock reads but ``clocks``."""
        return section

    def steady(self, section: dict[str, Any]) -> dict[str, Any]:
        """``section`` without what changes on its own (ages, times): the state stream sends a
        snapshot only when some steady part changed. The core already blanks agents'
        heartbeats."""
        return section

    def collectors(self) -> Iterable[Collector]:
        """Its ``/metrics`` series (registered once, read at every scrape)."""
        return ()

    @classmethod
    def api(cls) -> ApiPart:
        """Its part of the OpenAPI document: routes, schemas, tags."""
        raise NotImplementedError

    @classmethod
    def agent_backend(
        cls, config: AgentConfig, args: Sequence[str] | None = None
    ) -> AbstractAsyncContextManager[AgentBackend]:
        """Open what ``nfrx <name>`` serves for ``config``; ``args`` are the command's arguments
        after ``--`` (only MCP's stdio providers take any; None: none were given). Leaving the
        block closes it. Raises :class:`~nfrx.agent.runtime.AgentExit` for a reason the operator
        must see."""
        raise NotImplementedError(f"the {cls.name} plugin has no agent")


@contextlib.asynccontextmanager
async def pooled_backend(
    config: AgentConfig, make: Callable[[httpx.AsyncClient], Any]
) -> AsyncIterator[AgentBackend]:
    """The usual agent side (LLM, Docling, ASR): the backend ``make`` builds around one pooled
    keep-alive HTTP client sized to the agent's concurrency, at the backend's ``base_url``;
    leaving the block closes the client."""
    from nfrx.agent.proxy import backend_client

    async with backend_client(config.max_concurrency) as client:
        backend = make(client)
        yield AgentBackend(backend, backend.base_url, config)
