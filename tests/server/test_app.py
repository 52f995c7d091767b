"""The Quart internals the app relies on to keep long answers open (streams, transfers, the state
stream, uploads): Quart ends a response after ``RESPONSE_TIMEOUT`` (60 s) unless the app turns it
off, with the app config (:func:`nfrx.server.app.create_quart_app`) or per response
(``response.timeout = None``). ASGI calls on a mock clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from quart import Response
from quart_trio import QuartTrio

from nfrx.config.model import ServerConfig
from nfrx.server.app import create_quart_app
from nfrx.server.runner import compose

SCOPE = {
    "type": "http",
    "http_version": "1.1",
    "asgi": {},
    "method": "GET",
    "scheme": "http",
    "path": "/stream",
    "raw_path": b"/stream",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"x")],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 80),
    "extensions": {},
}


async def ticks() -> AsyncIterator[bytes]:
    while True:
        await trio.sleep(10)
        yield b"tick\n"


def streaming_app(*, config_timeout: bool, response_timeout: bool) -> QuartTrio:
    app = QuartTrio("guard")
    if not config_timeout:
        app.config["RESPONSE_TIMEOUT"] = None

    @app.get("/stream")
    async def stream() -> Response:
        response = Response(ticks())
        if not response_timeout:
            response.timeout = None
        return response

    return app


async def open_for(app: Any, seconds: float) -> bool:
    """Whether a GET /stream is still open (no final body message) after ``seconds``."""
    ended = trio.Event()

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()  # the client never leaves
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            ended.set()

    async with trio.open_nursery() as nursery:

        async def call() -> None:
            await app(dict(SCOPE), receive, send)
            ended.set()

        nursery.start_soon(call)
        with trio.move_on_after(seconds):
            await ended.wait()
        nursery.cancel_scope.cancel()
    return not ended.is_set()


@pytest.mark.parametrize(
    ("config_timeout", "response_timeout", "still_open"),
    [
        (True, True, False),  # Quart's default: cut at 60 s (else this guard is vacuous)
        (True, False, True),  # response.timeout = None (nfrx's streaming responses)
        (False, True, True),  # RESPONSE_TIMEOUT = None (nfrx's app config)
    ],
)
async def test_quart_cuts_a_response_after_its_timeout_unless_turned_off(
    autojump_clock: trio.testing.MockClock,
    config_timeout: bool,
    response_timeout: bool,
    still_open: bool,
) -> None:
    app = streaming_app(config_timeout=config_timeout, response_timeout=response_timeout)
    assert await open_for(app, 600) == still_open


def test_the_app_turns_quarts_blanket_limits_off() -> None:
    app = create_quart_app(compose(ServerConfig()))
    assert app.config["RESPONSE_TIMEOUT"] is None
    assert app.config["BODY_TIMEOUT"] is None
    assert app.config["MAX_CONTENT_LENGTH"] is None
