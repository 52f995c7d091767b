"""The server in process, with scripted agents on in-memory tunnels.

:func:`serve_app` runs ``nfrx serve``'s real app -- composed from the one list of plugins
(:func:`nfrx.server.runner.compose`), served by hypercorn on 127.0.0.1 and a free port -- and
:meth:`App.agent` registers an agent the way the connect route does, over an in-memory tunnel
whose agent end runs the test's handler (a scripted agent: it reads the request and writes the
answer it wants). Tests reach the app with a real HTTP client over loopback (:meth:`App.client`),
so streamed bodies, client disconnects and the per-request cleanups behave as in production
(``httpx.ASGITransport`` would buffer whole bodies).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
from hypercorn.trio import serve

from nfrx.config.model import ServerConfig
from nfrx.server.app import create_app
from nfrx.server.gateway import Gateway
from nfrx.server.registry import AgentRecord
from nfrx.server.runner import compose, hypercorn_config
from nfrx.transport.streams import IncomingStream
from tests.transport.helpers import Tunnel, open_tunnel

API_KEY = "ak"
CAP = 30.0
"""Hang guard for one test (in process, real clock)."""

Handler = Callable[[IncomingStream, "Seen"], Awaitable[None]]
"""A scripted agent: it answers the stream, given the request as it received it."""
JSON_HEAD = (("content-type", "application/json"),)


@attrs.define(eq=False)
class Seen:
    """A request as the agent end received it."""

    agent: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define(eq=False)
class App:
    gateway: Gateway
    url: str
    tunnels: trio.Nursery
    seen: list[Seen] = attrs.field(factory=list)
    """Every request any agent received, in order of arrival."""

    async def agent(
        self,
        kind: str,
        agent_id: str,
        handler: Handler,
        *,
        models: Sequence[str] = (),
        max_concurrency: int = 4,
        embedding_batch_size: int = 0,
    ) -> AgentRecord:
        """Register agent ``agent_id`` of ``kind``; each stream it gets is recorded in
        :attr:`seen` (request head and whole body) and then answered by ``handler``."""

        async def recorded(stream: IncomingStream) -> None:
            request = stream.request
            body = b"" if request.end else await stream.receive_all(64 << 20)
            headers = {name.lower(): value for name, value in request.headers}
            seen = Seen(agent_id, request.method, request.path, headers, body)
            self.seen.append(seen)
            await handler(stream, seen)

        tunnel: Tunnel = await self.tunnels.start(_run_tunnel, recorded)
        record = AgentRecord(
            kind=kind,
            id=agent_id,
            name=agent_id,
            version="test",
            session=tunnel.server,
            models=tuple(models),
            max_concurrency=max_concurrency,
            embedding_batch_size=embedding_batch_size,
        )
        self.gateway.registry.add(record)
        return record

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=CAP
        )


async def _run_tunnel(
    handler: Callable[[IncomingStream], Awaitable[None]], *, task_status: trio.TaskStatus[Tunnel]
) -> None:
    async with open_tunnel(handler) as tunnel:
        task_status.started(tunnel)
        await trio.sleep_forever()


@asynccontextmanager
async def serve_app(**settings: Any) -> AsyncIterator[App]:
    """The app of a server with ``settings`` (over ``ServerConfig``'s defaults; API key
    :data:`API_KEY`), serving until the block ends; its agents' tunnels close after it."""
    config = ServerConfig(host="127.0.0.1", port=0, api_key=API_KEY, **settings)
    gateway = compose(config)
    never = trio.Event()
    with trio.fail_after(CAP):
        async with trio.open_nursery() as tunnels:
            async with trio.open_nursery() as server:
                binds: list[str] = await server.start(
                    functools.partial(
                        serve,
                        create_app(gateway),
                        hypercorn_config(config),
                        shutdown_trigger=never.wait,
                        mode="asgi",
                    )
                )
                try:
                    yield App(gateway, binds[0], tunnels)
                finally:
                    server.cancel_scope.cancel()
            tunnels.cancel_scope.cancel()


# -- scripted agents ------------------------------------------------------------------------------


def answer(
    status: int = 200, body: Any = None, headers: Sequence[tuple[str, str]] = JSON_HEAD
) -> Handler:
    """An agent that answers every request with ``status`` and ``body`` (JSON unless bytes)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def handler(stream: IncomingStream, seen: Seen) -> None:
        await stream.send_response(status, tuple(headers), data=data, end=True)

    return handler
