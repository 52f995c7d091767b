"""The last-resort guard between the app and hypercorn (no exchange can end the process), and
the hypercorn behaviour it exists for."""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import h11
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from nfrx.exception_groups import leaves
from nfrx.server.guard import guarded

SCOPE = {"type": "http", "method": "GET", "path": "/x", "headers": []}


async def call(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await guarded(app)(dict(SCOPE), receive, send)
    return sent


def assert_internal_error(sent: list[dict[str, Any]]) -> None:
    start, body = sent
    assert start["type"] == "http.response.start"
    assert start["status"] == 500
    assert (b"content-type", b"application/json") in start["headers"]
    assert body["type"] == "http.response.body"
    assert not body.get("more_body", False)
    assert json.loads(body["body"])["error"]["code"] == "internal_error"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (101, []),
        (103, []),
        (200, [(b"x-a", b"b\r\nx-b: c")]),
        (200, [(b"bad name", b"v")]),
        (200, [(b"content-length", b"x")]),
    ],
)
async def test_an_invalid_head_never_reaches_hypercorn(
    status: int, headers: list[tuple[bytes, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with caplog.at_level(logging.ERROR, "nfrx.server"):
        sent = await call(app)
    assert_internal_error(sent)
    assert "refused to send an invalid response head" in caplog.text


async def test_an_exception_before_the_head_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, "nfrx.server"):
        sent = await call(app)
    assert_internal_error(sent)
    assert "request failed" in caplog.text
    assert "RuntimeError: boom" in caplog.text


async def test_an_exception_after_the_head_cuts_the_answer() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("boom")

    sent = await call(app)
    # No final body message: hypercorn then cuts the connection (the answer looks incomplete).
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[-1]["more_body"]


async def test_a_good_answer_passes_untouched() -> None:
    messages = [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
        {"type": "http.response.body", "body": b"ok"},
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    assert await call(app) == messages


async def test_a_send_that_fails_is_not_answered_again() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        raise OSError("connection lost")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await guarded(app)(dict(SCOPE), receive, send)
    assert [m["status"] for m in sent] == [200]


# -- what hypercorn does without the guard (else it could go) -----------------------------------


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def _answer_101(scope: Any, receive: Any, send: Any) -> None:
    """An app that answers 101 to a plain request (what an agent once made nfrx do)."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 101, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _serve_one_request(app: Any) -> bytes:
    """Run hypercorn with ``app``, send it one request, return what came back."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                functools.partial(serve, app, config, shutdown_trigger=stop.wait, mode="asgi")
            )
            port = int(binds[0].rsplit(":", 1)[1])
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
            stop.set()
    return answer


async def test_hypercorn_alone_still_dies_of_an_invalid_head() -> None:
    """hypercorn's h11 refuses the 101 and its fallback 500 fails too: the exception leaves
    ``serve`` and would end ``nfrx serve`` (else the guard's head check can go)."""
    with pytest.raises(BaseExceptionGroup) as caught:
        await _serve_one_request(_answer_101)
    assert any(isinstance(leaf, h11.LocalProtocolError) for leaf in leaves(caught.value))


async def test_behind_the_guard_hypercorn_answers_500_and_serves_on() -> None:
    answer = await _serve_one_request(guarded(_answer_101))
    assert answer.startswith(b"HTTP/1.1 500")
    assert b'"internal_error"' in answer
