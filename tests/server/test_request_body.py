"""BODY_TIMEOUT: an idle deadline between the chunks of a request body (autojump clock); and the
quart-trio internals the request-body bound relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from quart import request
from quart_trio import QuartTrio

from nfrx.server.request_body import (
    HIGH_WATER,
    BodyTimeout,
    BoundedBody,
    BoundedConnection,
    BoundedRequest,
    next_chunk,
)
from nfrx.server.upload import Upload


async def paced(gaps: list[float]) -> AsyncIterator[bytes]:
    for gap in gaps:
        await trio.sleep(gap)
        yield b"x"


async def test_a_slow_but_steady_body_is_read_whole(autojump_clock: trio.testing.MockClock) -> None:
    # Ten chunks 0.9 s apart: nine seconds in all, never one second without a byte.
    body = paced([0.9] * 10)
    chunks = []
    while (chunk := await next_chunk(body, 1.0)) is not None:
        chunks.append(chunk)
    assert chunks == [b"x"] * 10


async def test_a_body_that_stalls_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    body = paced([0.5, 0.5, 5.0])
    assert await next_chunk(body, 1.0) == b"x"
    assert await next_chunk(body, 1.0) == b"x"
    start = trio.current_time()
    with pytest.raises(BodyTimeout) as info:
        await next_chunk(body, 1.0)
    assert trio.current_time() - start == pytest.approx(1.0)
    error = info.value
    assert (error.status, error.code, error.type) == (408, "body_timeout", "invalid_request_error")
    assert error.message == "the request body stalled: nothing arrived for 1 s"


async def test_an_upload_that_stalls_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    upload = Upload(paced([0.1, 30.0]), 1000, idle=10.0)
    assert await upload.read() == b"x"
    with pytest.raises(BodyTimeout):
        await upload.read()


# -- the quart-trio internals the bound relies on ------------------------------------------------


async def test_a_bounded_body_waits_above_high_water_until_a_read() -> None:
    """:class:`BoundedBody` reads ``TrioBody``'s unread buffer (``_data``), its error
    (``_must_raise``) and its end (``_complete``), and hooks ``__anext__``/``__await__``."""
    body = BoundedBody(None, None)
    body.append(b"x" * HIGH_WATER)
    below = trio.Event()

    async def receiver() -> None:
        await body.wait_below_high_water()
        below.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert not below.is_set()  # full: the receiver waits
        assert await anext(aiter(body)) == b"x" * HIGH_WATER
    assert below.is_set()  # a read woke it
    body.append(b"y" * HIGH_WATER)
    body.set_complete()
    with trio.fail_after(1):
        await body.wait_below_high_water()  # complete: nothing more will come, no wait
    whole = BoundedBody(None, None)
    whole.append(b"z" * HIGH_WATER)
    whole.set_complete()
    assert await whole == b"z" * HIGH_WATER  # awaiting the whole body lifts the bound
    with trio.fail_after(1):
        await whole.wait_below_high_water()


async def test_quart_trio_feeds_bodies_through_the_bounded_connection() -> None:
    """``TrioASGIHTTPConnection`` calls ``handle_messages(nursery, request, receive)`` -- the
    method :class:`BoundedConnection` replaces -- and the app's ``asgi_http_class`` and
    ``request_class`` are the ones it uses."""
    calls: list[str] = []

    class Recording(BoundedConnection):
        async def handle_messages(  # type: ignore[override]
            self, nursery: trio.Nursery, request: Any, receive: Any
        ) -> None:
            calls.append(type(request.body).__name__)
            await super().handle_messages(nursery, request, receive)

    app = QuartTrio("guard")
    app.request_class = BoundedRequest
    app.asgi_http_class = Recording

    @app.post("/")
    async def echo() -> bytes:
        return await request.get_data()

    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "asgi": {},
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x"), (b"content-length", b"3")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    with trio.fail_after(5):
        await app(scope, receive, send)
    assert calls == ["BoundedBody"]
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"abc"
