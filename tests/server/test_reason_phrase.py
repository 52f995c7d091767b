"""Reason phrases on HTTP/1.1 status lines (``nfrx.server.reason_phrase``), read from the wire of
an in-process hypercorn: with :func:`install` every status line carries its phrase, hypercorn's
own error answers too; without it hypercorn still sends none (else the module can go)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import hypercorn.protocol
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from nfrx.server import reason_phrase


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the status code named by the path (``GET /401``)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    status = int(scope["path"].strip("/"))
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def server() -> AsyncIterator[int]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
        )
        yield int(binds[0].rsplit(":", 1)[1])
        stop.set()


async def status_line(port: int, request: bytes) -> bytes:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while b"\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk, data
                data += chunk
    return data.split(b"\r\n", 1)[0]


def get(status: int) -> bytes:
    return f"GET /{status} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Restored after the test: monkeypatch records the name's current value first.
    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", hypercorn.protocol.H11Protocol)
    reason_phrase.install()


@pytest.mark.usefixtures("installed")
async def test_status_lines_carry_the_standard_phrase() -> None:
    async with server() as port:
        assert await status_line(port, get(200)) == b"HTTP/1.1 200 OK"
        assert await status_line(port, get(401)) == b"HTTP/1.1 401 Unauthorized"
        assert await status_line(port, get(503)) == b"HTTP/1.1 503 Service Unavailable"
        # A code without a standard phrase keeps the bare number.
        assert await status_line(port, get(599)) == b"HTTP/1.1 599 "
        # hypercorn's own answer to a request it cannot parse goes the same way.
        assert await status_line(port, b"NOT HTTP\r\n\r\n") == b"HTTP/1.1 400 Bad Request"


async def test_hypercorn_alone_still_sends_no_phrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", reason_phrase.H11Protocol)
    async with server() as port:
        assert await status_line(port, get(401)) == b"HTTP/1.1 401 "
