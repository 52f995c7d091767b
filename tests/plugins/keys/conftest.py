"""A real redis-server for the tests of the keys' Redis store and of several instances' keys
(a Unix socket in a temporary directory; skipped, saying why, without Debian's redis-server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.redis_server import REDIS_SERVER, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and emptied for this test."""
    if redis_server.process is None:
        redis_server.start()  # a test stopped it
    redis_server.command("FLUSHALL")
    return redis_server.url
