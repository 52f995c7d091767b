"""BODY_TIMEOUT: an idle deadline between the chunks of a request body (autojump clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from nfrx.server.request_body import BodyTimeout, next_chunk
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
