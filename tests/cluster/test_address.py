"""``REDIS_URL`` / ``REDIS_ADDR`` forms, parsed without a Redis."""

from __future__ import annotations

import pytest

from nfrx.cluster.address import BadAddress, RedisAddress, connect, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:6379", RedisAddress(kind="single", url="redis://127.0.0.1:6379")),
        (
            "redis://:secret@h:1/2",
            RedisAddress(kind="single", url="redis://:secret@h:1/2", password="secret"),
        ),
        (
            "rediss://u:p@h",
            RedisAddress(kind="single", url="rediss://u:p@h", username="u", password="p", tls=True),
        ),
        (
            "unix:///run/redis.sock?db=1",
            RedisAddress(kind="single", url="unix:///run/redis.sock?db=1"),
        ),
        (
            "redis-sentinel://s1:1,s2/primary/3",
            RedisAddress(kind="sentinel", nodes=(("s1", 1), ("s2", 26379)), master="primary", db=3),
        ),
        ("redis://a:1,b:2", RedisAddress(kind="cluster", nodes=(("a", 1), ("b", 2)))),
        (
            "rediss-cluster://a",
            RedisAddress(kind="cluster", nodes=(("a", 6379),), tls=True),
        ),
    ],
)
def test_forms(text: str, expected: RedisAddress) -> None:
    assert parse(text) == expected


async def test_a_client_is_made_without_connecting() -> None:
    client = connect(parse("127.0.0.1:1"))
    async with client:  # coredis connects on first use: nothing listens on port 1
        pass


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("memcached://h", "unknown scheme 'memcached'"),
        ("redis://h:port", "port 'port' is not a number"),
        ("redis://h:99999", "port 99999 is out of range"),
        ("redis-sentinel://s1:1", "names its master"),
        ("redis://h/x", "database 'x' is not a number"),
    ],
)
def test_bad_forms_say_why(text: str, message: str) -> None:
    with pytest.raises(BadAddress, match=message):
        parse(text)
