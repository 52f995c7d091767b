"""The server's shared state and the request-side helpers every plugin uses.

One :class:`Gateway` per ``nfrx serve`` process: its config, the agent registry, the dispatch
queue, the metrics, the drain flag, and its plugins (:mod:`nfrx.server.plugin`), which it makes
from the plugin classes the composition hands it. Plugins receive it; they never import the
composition modules (app, runner).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, TypeVar, cast

import trio
from quart import request

from nfrx.cluster import for_gateway
from nfrx.server import auth
from nfrx.server.accounting import route_of
from nfrx.server.dispatch_queue import DispatchQueue
from nfrx.server.http_errors import HttpError, unauthorized
from nfrx.server.metrics import ServerMetrics
from nfrx.server.registry import AgentRegistry
from nfrx.server.request_body import next_chunk
from nfrx.server.traffic import Traffic
from nfrx.server.upload import Upload, too_large
from nfrx.server.usage import Usage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nfrx.config.model import ServerConfig
    from nfrx.server.accounting import ClientKeys, RequestRecord
    from nfrx.server.http_errors import ErrorStyle
    from nfrx.server.plugin import Plugin
    from nfrx.server.proxy import Exchange
    from nfrx.server.registry import AgentRecord

P = TypeVar("P", bound="Plugin")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

FORWARDED_REQUEST_HEADERS = frozenset(
    {
        "content-type",
        "accept",
        "accept-language",
        "user-agent",
        "openai-beta",
        "anthropic-version",
        "anthropic-beta",
    }
)
"""Client headers that reach the backend. Everything else -- above all ``Authorization``,
``X-Api-Key`` and cookies -- stays on the server."""


def header(name: str) -> str | None:
    """The current request's first ``name`` header, or None.

    Not ``request.headers.get``: werkzeug builds and catches a ``BadRequestKeyError`` for every
    missing header, which costs more than the lookup itself.
    """
    values = request.headers.getlist(name)
    return values[0] if values else None


_ERROR_STYLE = "nfrx.error_style"


def use_error_style(style: ErrorStyle) -> None:
    """Answer the current request's errors in ``style`` (the default is ``openai``)."""
    cast("dict[str, Any]", request.scope)[_ERROR_STYLE] = style


def error_style() -> ErrorStyle:
    """The error style the current request's errors are answered in."""
    style: ErrorStyle = cast("dict[str, Any]", request.scope).get(_ERROR_STYLE, "openai")
    return style


class Gateway:
    def __init__(
        self,
        config: ServerConfig,
        plugins: Iterable[Callable[[Gateway], Plugin]] = (),
        *,
        disabled: Iterable[str] = (),
    ) -> None:
        """A gateway with one plugin made by each of ``plugins`` (plugin classes, in the list's
        order); ``disabled`` names the plugins ``PLUGINS`` left out (their routes answer 404
        ``plugin_disabled``)."""
        self.config = config
        self.registry = AgentRegistry()
        self.queue = DispatchQueue(self.registry, config.llm_queue_size)
        self.drain_started = trio.Event()
        """Set when the drain starts: long-lived responses that would hold it up (state
        streams) end on it."""
        self.usage_by_model: dict[tuple[str, str], Usage] = {}
        """Tokens relayed per (agent kind, model), for state and metrics."""
        self.exchange_listeners: list[Callable[[Exchange], None]] = []
        """Called with every relayed exchange when it ends (metrics subscribe here)."""
        self.request_listeners: list[Callable[[RequestRecord], None]] = []
        """Called with every HTTP request's record when it ends (:mod:`.accounting`)."""
        self.client_keys: ClientKeys | None = None
        """Admits requests that carry a client key; set by the keys plugin when it is made."""
        self.metrics = ServerMetrics(self)
        """Prometheus series of this gateway (``GET /metrics``); subscribes to the above."""
        self.traffic = Traffic(self)
        """The recent traffic (the dashboard's charts); subscribes to the above."""
        self.cluster = for_gateway(self)
        """This instance among the gateway's others (:mod:`nfrx.cluster`; alone without
        ``REDIS_URL``): the hooks the core and the plugins call."""
        self.disabled_plugins = tuple(disabled)
        self._makers = tuple(plugins)
        self._made: dict[Callable[[Gateway], Plugin], Plugin | None] = {}
        """Plugin made by each maker; None while it is being made."""
        self.plugins: tuple[Plugin, ...] = ()  # while they are made
        self.plugins = tuple(self._make(make) for make in self._makers)
        """The plugins it mounts, runs and reports, in the list's order."""

    def _make(self, make: Callable[[Gateway], Plugin]) -> Plugin:
        """The plugin ``make`` makes, made now unless it was already (a plugin that looks up
        another while it is made has that one made first)."""
        if make in self._made:
            made = self._made[make]
            if made is None:
                raise RuntimeError(f"plugins look each other up while they are made: {make!r}")
            return made
        self._made[make] = None
        plugin = self._made[make] = make(self)
        for collector in plugin.collectors():
            self.metrics.registry.register(collector)
        return plugin

    def plugin(self, cls: type[P]) -> P:
        """Its plugin of class ``cls`` (made at once if a plugin being made asks for one that
        comes later in the list); raises LookupError if it has none."""
        for make in self._makers:
            if isinstance(make, type) and issubclass(make, cls):
                return cast("P", self._make(make))
        for plugin in self._made.values():
            if isinstance(plugin, cls):
                return plugin
        raise LookupError(f"this server has no {cls.__name__}")

    @property
    def agent_kinds(self) -> tuple[str, ...]:
        """The kinds of agent its plugins accept, in the list's order."""
        return tuple(p.agent_kind for p in self.plugins if p.agent_kind is not None)

    def serves_models(self, kind: str) -> bool:
        """Whether agents of ``kind`` serve models clients name (LLM, ASR)."""
        return any(p.agent_kind == kind and p.serves_models for p in self.plugins)

    @property
    def draining(self) -> bool:
        """True from the first SIGTERM/SIGINT on: new API requests get 503."""
        return self.drain_started.is_set()

    @draining.setter
    def draining(self, value: bool) -> None:
        if not value:
            raise ValueError("a drain cannot be undone")
        self.drain_started.set()

    # -- per request ---------------------------------------------------------------------------

    def admit(self) -> None:
        """Refuse the request while draining (503). Then admit the API key (or an
        API_HTTP_ROLES role) with full access; else a client key within its rules
        (:attr:`client_keys`: 401, 403 or 429 otherwise); else anyone while neither API_KEY nor
        API_HTTP_ROLES is set; else 401."""
        if self.draining:
            raise HttpError(
                503,
                "draining",
                "the server is shutting down and accepts no new requests",
                headers={"Retry-After": "5"},
            )
        token = self.presented_key()
        if self.api_key_granted(token):
            return
        keys = self.client_keys
        if keys is not None and keys.admit(token, route_of(request.path) or request.path):
            return
        if self.config.api_key or self.config.api_http_roles:
            raise unauthorized()

    def admit_model(self, model: str) -> None:
        """Raise 403 when the request's client key may not use ``model``."""
        if self.client_keys is not None:
            self.client_keys.admit_model(model)

    @staticmethod
    def presented_key() -> str | None:
        """The bearer token, else the ``X-Api-Key`` header (Anthropic clients send the key so)."""
        token = auth.bearer_token(header("Authorization"))
        return token if token is not None else header("X-Api-Key")

    def api_key_granted(self, token: str | None) -> bool:
        """``token`` is the API key, or X-User-Roles holds an API_HTTP_ROLES role (False for
        whichever is not configured)."""
        config = self.config
        if config.api_key and auth.key_matches(token, config.api_key):
            return True
        roles = config.api_http_roles
        return bool(roles) and auth.roles_match(header("X-User-Roles"), roles)

    def check_api_key(self) -> None:
        """Raise 401 unless the request carries the API key or an API_HTTP_ROLES role in
        X-User-Roles (or neither is configured). Client keys are not accepted here."""
        configured = self.config.api_key or self.config.api_http_roles
        if configured and not self.api_key_granted(self.presented_key()):
            raise unauthorized()

    @staticmethod
    def request_id() -> str:
        """The client's ``X-Request-Id`` if it is sane, else a new one."""
        given = header("X-Request-Id") or ""
        return given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @staticmethod
    def cleanups() -> list[Callable[[], None]]:
        """Callbacks the app runs when this request's ASGI call ends, however it ends."""
        scope = cast("dict[str, Any]", request.scope)
        cleanups: list[Callable[[], None]] = scope["nfrx.cleanups"]
        return cleanups

    async def read_body(self) -> bytes:
        """The request body, refusing (413) more than ``max_request_bytes`` and (408) a body that
        stalls for ``body_timeout``."""
        limit = self.config.max_request_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        body = aiter(request.body)
        while (chunk := await next_chunk(body, self.config.body_timeout)) is not None:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def upload(self) -> Upload:
        """The request body as an :class:`Upload` to stream, refusing (413) a declared length
        over ``max_upload_bytes`` at once; the rest of the limit is counted while it streams."""
        limit = self.config.max_upload_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise too_large(limit)
        upload = Upload(aiter(request.body), limit, idle=self.config.body_timeout)
        self.cleanups().append(upload.close)
        return upload

    def forwarded_headers(self, request_id: str) -> tuple[tuple[str, str], ...]:
        headers = [
            (name.lower(), value)
            for name, value in request.headers.items()
            if name.lower() in FORWARDED_REQUEST_HEADERS
        ]
        headers.append(("x-request-id", request_id))
        return tuple(headers)

    # -- accounting ----------------------------------------------------------------------------

    def exchange_finished(self, exchange: Exchange) -> None:
        exchange.agent.busy_seconds_total += exchange.duration
        for listener in self.exchange_listeners:
            listener(exchange)

    def record_usage(self, agent: AgentRecord, model: str, usage: Usage) -> None:
        agent.usage = agent.usage + usage
        key = (agent.kind, model)
        self.usage_by_model[key] = self.usage_by_model.get(key, Usage()) + usage


def _too_large(limit: int) -> HttpError:
    return HttpError(
        413, "request_too_large", f"the request body exceeds the limit of {limit} bytes"
    )
