"""What the server counts per client request, across the tasks that serve it.

Every HTTP request gets one :class:`RequestRecord`, made by :func:`accounted` (an ASGI layer
around the app) and reachable with :func:`current` from every task the request's ASGI call runs:
Trio tasks start with a copy of their parent's context, so the route handler, the relayed body
Quart iterates and the per-request cleanups all see the same record (a mutable object, so what one
of them writes the others read). What fills it in:

* the route it belongs to (:func:`route_of`), at once;
* the client key admitted for it, or refused (the keys plugin: :attr:`RequestRecord.key`,
  :attr:`RequestRecord.refused`);
* every relayed exchange that ends inside it (:meth:`RequestRecord.exchange_ended`, from the
  gateway's ``exchange_listeners`` and the MCP relay): the agent's model, the tokens its answer
  reported, how it ended;
* the response status, as the app sends it.

When the ASGI call ends, however it ends, the record is final and is handed to the gateway's
``request_listeners`` (the keys plugin's usage, the dashboard's traffic history). Listeners run
synchronously in the request's task: they must be quick and must not raise.

A request served outside :func:`accounted` (a unit test's bare Quart app) has no record:
:func:`current` is None, and whatever would be written to it is skipped.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from nfrx.server.usage import Usage

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nfrx.server.gateway import Gateway
    from nfrx.server.proxy import Exchange

AGENT_ROUTES: Final = ("llm", "asr", "docling")
"""Route names that are a plugin's whole ``/api/<name>`` prefix."""

SUCCESS: Final = "success"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"
REFUSED: Final = "refused"
OUTCOMES: Final = (SUCCESS, ERROR, CANCELLED, REFUSED)


def route_of(path: str) -> str | None:
    """The client route ``path`` belongs to: ``llm``, ``asr``, ``docling``, ``mcp:<relay id>``,
    ``jobs`` (the jobs and transfer APIs), or None (state, admin, docs, metrics, the dashboard)."""
    parts = path.split("/", 5)
    if len(parts) < 3 or parts[0] or parts[1] != "api":
        return None
    name = parts[2]
    if name in AGENT_ROUTES:
        return name
    if name in ("jobs", "transfer"):
        return "jobs"
    if name == "mcp" and len(parts) > 4 and parts[3] == "id" and parts[4]:
        return f"mcp:{parts[4]}"
    return None


@attrs.define(eq=False)
class RequestRecord:
    """One client request as the server accounts for it (see the module docstring)."""

    route: str | None
    started: float = attrs.field(factory=trio.current_time)
    """``trio.current_time()`` when the request arrived."""
    key: str | None = None
    """Id of the client key the request was admitted (or refused) for; None for the API key."""
    refused: bool = False
    """A client key's rule refused it (403, 429) before dispatch."""
    model: str | None = None
    """The agent's model of the last exchange that ended in it (``mcp:<relay>`` for MCP)."""
    usage: Usage = attrs.field(factory=Usage)
    """Tokens reported by every exchange that ended in it (retries and split embeddings add)."""
    exchanges: int = 0
    failed: bool = False
    """The last exchange failed (the agent, the backend, a timeout; also after the head)."""
    cancelled: bool = False
    """The client gave up while the last exchange was under way."""
    status: int | None = None
    """The response status the client was sent; None if it left before."""
    ended: float | None = None

    @property
    def relayed(self) -> bool:
        """True when at least one exchange with an agent ended in it."""
        return self.exchanges > 0

    @property
    def duration(self) -> float:
        end = self.ended if self.ended is not None else trio.current_time()
        return end - self.started

    @property
    def outcome(self) -> str:
        """``refused`` by a key's rule; ``cancelled`` when the client gave up first; ``error``
        for an error status or a failed exchange; else ``success``."""
        if self.refused:
            return REFUSED
        if self.cancelled or self.status is None:
            return CANCELLED
        if self.failed or self.status >= 400:
            return ERROR
        return SUCCESS

    def exchange_ended(
        self, model: str, usage: Usage | None, *, failed: bool, cancelled: bool
    ) -> None:
        self.exchanges += 1
        self.model = model
        if usage is not None:
            self.usage = self.usage + usage
        self.failed = failed
        self.cancelled = cancelled


_CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "nfrx_request", default=None
)


def current() -> RequestRecord | None:
    """The record of the request whose tasks call this, or None outside one."""
    return _CURRENT.get()


@contextlib.contextmanager
def recording(record: RequestRecord) -> Iterator[RequestRecord]:
    """Make ``record`` the current one for this task, and the tasks it starts, within the
    block."""
    token = _CURRENT.set(record)
    try:
        yield record
    finally:
        _CURRENT.reset(token)


class ClientKeys(Protocol):
    """What the gateway asks of the keys plugin (:mod:`nfrx.plugins.keys`) to admit a request
    that carries a client key instead of the API key."""

    def admit(self, token: str | None, route: str) -> bool:
        """True when ``token`` is a client key that may use ``route`` now (the request is then
        the key's, counted against its limits); False when it is no client key at all. Raises
        :class:`~nfrx.server.http_errors.HttpError`: 401 for a revoked, expired or disabled key,
        403 for a route it may not use, 429 past a limit."""
        ...

    def admit_model(self, model: str) -> None:
        """Raise 403 when the current request's client key may not use ``model``."""
        ...

    def may_use(self, model: str) -> bool:
        """False when the current request's client key may not use ``model`` (True for a
        request without one): model lists leave out what a key cannot call."""
        ...


def _exchange_listener(exchange: Exchange) -> None:
    record = current()
    if record is not None:
        record.exchange_ended(
            exchange.model,
            exchange.usage,
            failed=exchange.failed or (exchange.status or 0) >= 400,
            cancelled=exchange.cancelled,
        )


def accounted(app: Any, gateway: Gateway) -> Any:
    """``app`` (ASGI) with a :class:`RequestRecord` per HTTP request, handed to
    ``gateway.request_listeners`` when the request's ASGI call ends (see the module docstring)."""
    gateway.exchange_listeners.append(_exchange_listener)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        record = RequestRecord(route_of(scope.get("path", "")))

        async def send_noted(message: Any) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            with recording(record):
                await app(scope, receive, send_noted)
        finally:
            record.ended = trio.current_time()
            for listener in gateway.request_listeners:
                listener(record)

    return asgi
