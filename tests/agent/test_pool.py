"""The agent's sharded backend pool: bounded shards, next shard with room, slots given back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from nfrx.agent.proxy import ShardedTransport


class _Body(httpx.AsyncByteStream):
    """A body the response has not read yet (as from a real connection)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"ok"


def test_shards_cover_the_limit_in_bounded_pieces() -> None:
    pool = ShardedTransport(4202, shard_connections=32)
    assert len(pool._shards) == 132
    assert pool._per_shard * len(pool._shards) >= 4202
    assert pool._per_shard <= 32
    assert len(ShardedTransport(10)._shards) == 1


async def test_requests_rotate_and_skip_full_shards() -> None:
    pool = ShardedTransport(6, shard_connections=2)  # 3 shards of 2
    seen: list[int] = []

    def shard(index: int) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(index)
            return httpx.Response(200, stream=_Body())

        return httpx.MockTransport(handler)

    pool._shards = [shard(i) for i in range(3)]  # type: ignore[list-item]
    request = httpx.Request("POST", "http://backend/v1/x", content=b"{}")
    open_responses = [await pool.handle_async_request(request) for _ in range(4)]
    assert seen == [0, 1, 2, 0]
    assert pool._in_flight == [2, 1, 1]
    # Shard 0 is full: the next requests go to the others.
    open_responses.append(await pool.handle_async_request(request))
    assert seen[-1] == 1
    for response in open_responses:
        assert b"".join([chunk async for chunk in response.stream]) == b"ok"  # type: ignore[union-attr]
        await response.aclose()
    assert pool._in_flight == [0, 0, 0]
    await pool.aclose()
