"""The server's shared state and the request-side helpers every plugin uses.

One :class:`Gateway` per ``nfrx serve`` process: its config, the agent registry and the drain
flag. Plugins receive it; they never import the composition modules (app, runner).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, cast

import trio
from quart import request

from nfrx.server import auth
from nfrx.server.http_errors import HttpError, model_not_found, unauthorized
from nfrx.server.registry import AgentRecord, AgentRegistry
from nfrx.server.scheduler import choose_match, matches

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.config.model import ServerConfig

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


class Gateway:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = AgentRegistry()
        self.draining = False

    # -- per request ---------------------------------------------------------------------------

    def admit(self) -> None:
        """Refuse the request while draining (503), or without the API key (401)."""
        if self.draining:
            raise HttpError(
                503,
                "draining",
                "the server is shutting down and accepts no new requests",
                headers={"Retry-After": "5"},
            )
        self.check_api_key()

    def check_api_key(self) -> None:
        """Raise 401 unless the request carries the API key (or none is configured)."""
        token = auth.bearer_token(request.headers.get("Authorization"))
        if not auth.key_matches(token, self.config.api_key):
            raise unauthorized()

    @staticmethod
    def request_id() -> str:
        """The client's ``X-Request-Id`` if it is sane, else a new one."""
        given = request.headers.get("X-Request-Id", "")
        return given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @staticmethod
    def cleanups() -> list[Callable[[], None]]:
        """Callbacks the app runs when this request's ASGI call ends, however it ends."""
        scope = cast("dict[str, Any]", request.scope)
        cleanups: list[Callable[[], None]] = scope["nfrx.cleanups"]
        return cleanups

    async def read_body(self) -> bytes:
        """The request body, refusing (413) more than ``max_request_bytes``."""
        limit = self.config.max_request_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in request.body:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def forwarded_headers(self, request_id: str) -> tuple[tuple[str, str], ...]:
        headers = [
            (name.lower(), value)
            for name, value in request.headers.items()
            if name.lower() in FORWARDED_REQUEST_HEADERS
        ]
        headers.append(("x-request-id", request_id))
        return tuple(headers)

    # -- dispatch ------------------------------------------------------------------------------

    async def acquire_agent(
        self, kind: str, model: str, *, agent_id: str | None = None, aliases: bool = False
    ) -> tuple[AgentRecord, str]:
        """Wait for an agent of ``kind`` that serves ``model`` (only agent ``agent_id``, if given)
        to have a free slot, and take it. Returns the agent and its own id for the model (which
        differs from ``model`` after an alias match).

        Raises 404 at once (and again if, while waiting, the last agent serving the model
        leaves). Event-driven: wakes on every registry change, never polls.
        """
        registry = self.registry
        while True:
            agents = [a for a in registry.agents(kind) if agent_id is None or a.id == agent_id]
            found = matches(agents, model, aliases=aliases)
            if not found:
                raise model_not_found(model)
            chosen = choose_match(found)
            if chosen is not None:
                registry.acquire(chosen[0])
                return chosen
            await registry.wait_changed()

    def deadline(self) -> float:
        return trio.current_time() + self.config.request_timeout


def _too_large(limit: int) -> HttpError:
    return HttpError(
        413, "request_too_large", f"the request body exceeds the limit of {limit} bytes"
    )
