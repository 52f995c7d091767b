"""What the LLM, Docling and ASR plugins share: routes that relay HTTP exchanges through agents to
a backend the agents reach over HTTP.

A :class:`RelayPlugin` subclass names itself and its backend class; its package holds its halves
in modules of fixed names, imported when first used (so that an agent never loads the server's
web stack, nor the server an agent's backend):

* ``server``: ``blueprint(gateway)``, its routes;
* ``openapi``: ``api()``, its part of the OpenAPI document;
* ``agent``: the backend class, built as ``Backend(config, client)`` around the agent's pooled
  HTTP client (:func:`~nfrx.server.plugin.pooled_backend`) and serving at its ``base_url``.

It keeps no state of its own: routing, queueing, retries, drain, state and metrics are the core's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from nfrx.server.plugin import Plugin, pooled_backend

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractAsyncContextManager
    from types import ModuleType

    from quart import Blueprint

    from nfrx.config.agents import AgentConfig
    from nfrx.server.openapi import ApiPart
    from nfrx.server.plugin import AgentBackend


class RelayPlugin(Plugin):
    """An agent plugin of the shape above; its agents are of the kind it is named."""

    backend_class: ClassVar[str]
    """The name of its backend class in its ``agent`` module."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.agent_kind = cls.name

    @classmethod
    def _half(cls, module: str) -> ModuleType:
        return importlib.import_module(f"{cls.__module__.rpartition('.')[0]}.{module}")

    def blueprint(self) -> Blueprint:
        routes: Blueprint = self._half("server").blueprint(self.gateway)
        return routes

    @classmethod
    def api(cls) -> ApiPart:
        part: ApiPart = cls._half("openapi").api()
        return part

    @classmethod
    def agent_backend(
        cls, config: AgentConfig, args: Sequence[str] | None = None
    ) -> AbstractAsyncContextManager[AgentBackend]:
        backend = getattr(cls._half("agent"), cls.backend_class)
        return pooled_backend(config, lambda client: backend(config, client))
