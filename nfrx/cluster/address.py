"""``REDIS_URL`` (or the original's ``REDIS_ADDR``) to a coredis client.

Accepted forms (:func:`parse`; the original nfrx's, plus Cluster spelled out):

=================================================== ===========================================
form                                                client
=================================================== ===========================================
``host:port``                                       ``redis://host:port``
``redis://[[user]:password@]host:port[/db]``        one Redis (``rediss://``: TLS)
``unix://[[user]:password@]/path/redis.sock[?db=N]`` one Redis on a Unix socket
``redis-sentinel://[[user]:password@]h:p[,h:p]/``   the primary of ``master`` that the Sentinels
``master[/db]``                                     name (``rediss-sentinel://``: TLS)
``redis-cluster://[[user]:password@]h:p[,h:p]``     a Redis Cluster (``rediss-cluster://``: TLS);
                                                    so is ``redis://`` with several hosts
=================================================== ===========================================

Every key nfrx writes carries the hash tag ``{nfrx}``, so in a Cluster they all live in one slot
(scripts and multi-key reads work); the Cluster gives nfrx availability, not spread.

coredis is imported by :func:`connect` only: an instance without ``REDIS_URL`` never loads it.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

import attrs

CONNECT_TIMEOUT: Final = 2.0
"""Seconds to connect to Redis (or a Sentinel) before the attempt counts as failed."""
STREAM_TIMEOUT: Final = 5.0
"""Seconds a Redis reply may take before the connection counts as broken."""

SCHEMES: Final = (
    "redis",
    "rediss",
    "redis-sentinel",
    "rediss-sentinel",
    "redis-cluster",
    "rediss-cluster",
)
DEFAULT_PORT: Final = 6379
SENTINEL_PORT: Final = 26379


class BadAddress(ValueError):
    """``REDIS_URL`` cannot be understood; the message says why (never the password)."""


@attrs.frozen(kw_only=True)
class RedisAddress:
    kind: str
    """``single``, ``sentinel`` or ``cluster``."""
    url: str = ""
    """For ``single``: the URL coredis reads (``redis://``, ``rediss://``, ``unix://``)."""
    nodes: tuple[tuple[str, int], ...] = ()
    """For ``sentinel`` (the Sentinels) and ``cluster`` (startup nodes)."""
    master: str = ""
    """For ``sentinel``: the name of the primary."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse(text: str) -> RedisAddress:
    """The address ``text`` names (see the module docstring); raises :class:`BadAddress`."""
    text = text.strip()
    if not text:
        raise BadAddress("empty")
    if "://" not in text:
        text = f"redis://{text}"
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme == "unix":
        return RedisAddress(kind="single", url=text)
    if scheme not in SCHEMES:
        raise BadAddress(f"unknown scheme {scheme!r} ({', '.join(['unix', *SCHEMES])})")
    tls = scheme.startswith("rediss")
    parts = urllib.parse.urlsplit(f"x://{rest}")
    username, password = _credentials(parts.netloc)
    hosts = parts.netloc.rpartition("@")[2]
    default_port = SENTINEL_PORT if scheme.endswith("-sentinel") else DEFAULT_PORT
    nodes = tuple(_node(item, default_port) for item in hosts.split(",") if item)
    if not nodes:
        raise BadAddress("no host")
    path = [segment for segment in parts.path.split("/") if segment]
    query = urllib.parse.parse_qs(parts.query)
    common: dict[str, Any] = {"username": username, "password": password, "tls": tls}
    if scheme.endswith("-sentinel"):
        if not path:
            raise BadAddress("a Sentinel address names its master: redis-sentinel://h:p/master")
        db = _db(path[1] if len(path) > 1 else query.get("db", ["0"])[0])
        return RedisAddress(kind="sentinel", nodes=nodes, master=path[0], db=db, **common)
    if scheme.endswith("-cluster") or len(nodes) > 1:
        return RedisAddress(kind="cluster", nodes=nodes, **common)
    _db(path[0] if path else query.get("db", ["0"])[0])  # checked; coredis reads the URL
    return RedisAddress(kind="single", url=f"{'rediss' if tls else 'redis'}://{rest}", **common)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(password) if colon else None,
    )


def _node(item: str, default_port: int) -> tuple[str, int]:
    host, colon, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
    if not colon:
        host, port = item, str(default_port)
    host = host.strip("[]")
    if not host:
        raise BadAddress(f"no host in {item!r}")
    try:
        number = int(port)
    except ValueError as exc:
        raise BadAddress(f"port {port!r} is not a number") from exc
    if not 0 < number < 65536:
        raise BadAddress(f"port {number} is out of range")
    return host, number


def _db(text: str) -> int:
    try:
        db = int(text)
    except ValueError as exc:
        raise BadAddress(f"database {text!r} is not a number") from exc
    if db < 0:
        raise BadAddress(f"database {db} is negative")
    return db


def connect(address: RedisAddress) -> Any:
    """A coredis client for ``address`` (not connected yet: coredis connects on first use).
    Replies are decoded to ``str``."""
    import coredis

    timeouts: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "stream_timeout": STREAM_TIMEOUT,
    }
    if address.kind == "single":
        return coredis.Redis.from_url(address.url, decode_responses=True, **timeouts)
    if address.kind == "cluster":
        return coredis.RedisCluster(
            startup_nodes=[coredis.connection.TCPLocation(h, p) for h, p in address.nodes],
            decode_responses=True,
            ssl=address.tls,
            username=address.username,
            password=address.password,
            connect_timeout=CONNECT_TIMEOUT,
            stream_timeout=STREAM_TIMEOUT,
        )
    connection: dict[str, Any] = {
        **timeouts,
        "username": address.username,
        "password": address.password,
        "ssl": address.tls,
    }
    sentinel = coredis.Sentinel(
        [coredis.connection.TCPLocation(h, p) for h, p in address.nodes],
        sentinel_kwargs=connection,
        decode_responses=True,
        db=address.db,
        **connection,
    )
    return sentinel.primary_for(address.master)
