"""Transfer channels across instances (``REDIS_URL``): a side that reaches another instance than
the channel's is relayed there over HTTP.

A channel lives on the instance that created it, its *home*: the relay of :mod:`.channels`, its
backpressure and its bounded memory are there. When several instances share a Redis, the home is
recorded as ``{nfrx}:transfer:<channel id>`` = the home's HTTP base URL (its ``ADVERTISE_URL``,
``ws`` read as ``http``), with the channel's TTL: the time both sides have to attach. A reader or
writer that reaches an instance not holding the channel is relayed to the home, as one HTTP
request with the caller's credentials (the home checks them again): the writer's body is
streamed up as it comes, the reader's response streamed down as it comes, each through one
bounded buffer (quart's request body and httpx's reads), so the TCP backpressure of both legs
reaches the clients and an instance holds about one chunk per relayed side. The home's answer
(its status and JSON error) is passed on as it is. A reader whose home cuts the body (the writer
failed) is cut in turn (never a silently truncated 200); a writer whose relay fails gets 502.

**Why HTTP between instances, not Redis.** The bytes already cross the network once per leg
either way; through Redis they would cross twice more (in and out), each chunk costing a round
trip, a Redis memory peak per chunk in flight and a polling or blocking-read loop on the reading
side -- and a 1 GB transfer would go through the one process every instance depends on. A direct
HTTP request costs nothing but a connection, keeps Redis to one key per channel, and the
instances can already reach one another (the agents dial every ``ADVERTISE_URL``).

**Redis unreachable**: a channel created meanwhile works for sides that reach its home (its home
is not recorded: the log says so); a side on another instance for a channel it does not hold gets
503 ``transfer_unavailable`` (it may be elsewhere; Redis cannot say). A home that cannot be
reached: 502 ``transfer_failed``. Alone (no ``REDIS_URL``), nothing here does anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import httpx
import trio
from quart import Response, request

from nfrx.cluster.store import PREFIX, ClusterUnavailable, translated
from nfrx.plugins.transfer.channels import TransferError
from nfrx.server.proxy import RelayBroken

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nfrx.cluster.shared import SharedCluster
    from nfrx.plugins.transfer.channels import Channel
    from nfrx.server.gateway import Gateway

log = logging.getLogger("nfrx.transfer")

RELAYED: Final = "X-Nfrx-Transfer-Relayed"
"""Marks a request one instance relays to the channel's home (never relayed again)."""

FORWARDED: Final = ("Authorization", "X-User-Roles", "Content-Type")
"""The caller's headers the relay passes on."""

CONNECT_TIMEOUT: Final = 5.0
"""Seconds to reach the home instance."""

CLOSE_TIMEOUT: Final = 1.0


def home_key(channel_id: str) -> str:
    return f"{PREFIX}:transfer:{channel_id}"


def http_base(advertise_url: str) -> str:
    """An instance's HTTP base URL from its advertise URL (``ws``/``wss`` as ``http``/``https``)."""
    scheme, sep, rest = advertise_url.partition("://")
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}{sep}{rest}".rstrip("/")


class TransferHomes:
    """Where the channels live, for the instances sharing ``cluster`` (None: alone)."""

    def __init__(self, cluster: SharedCluster | None) -> None:
        self.cluster = cluster

    @classmethod
    def of(cls, gateway: Gateway) -> TransferHomes:
        """The homes of ``gateway``'s channels: shared when it is one of several instances."""
        cluster = None
        if gateway.config.redis_url:
            from nfrx.cluster.shared import SharedCluster

            assert isinstance(gateway.cluster, SharedCluster)
            cluster = gateway.cluster
        return cls(cluster)

    async def register(self, channel: Channel, ttl: float) -> None:
        """Record this instance as ``channel``'s home for ``ttl`` seconds (logged, not raised,
        if Redis cannot be reached: the channel then works from here only)."""
        cluster = self.cluster
        if cluster is None or not cluster.url:
            return
        try:
            with translated("transfer home write"):
                client = await cluster.redis()
                await client.set(
                    home_key(channel.id), http_base(cluster.url), px=max(1, int(ttl * 1000))
                )
        except ClusterUnavailable as exc:
            log.warning("transfer %s works through this instance only: %s", channel.id, exc)

    async def elsewhere(self, channel_id: str) -> str | None:
        """The home's base URL of a channel this instance does not hold, or None (unknown here
        and in Redis, or alone, or already relayed once). Raises 503 ``transfer_unavailable``
        when Redis cannot say."""
        cluster = self.cluster
        if cluster is None or request.headers.get(RELAYED):
            return None
        try:
            with translated("transfer home read"):
                client = await cluster.redis()
                home: str | None = await client.get(home_key(channel_id))
        except ClusterUnavailable as exc:
            raise TransferError(
                503,
                "transfer_unavailable",
                f"this instance does not hold the channel and cannot ask the others: {exc}",
            ) from None
        if home is None or home == http_base(cluster.url):
            return None
        return home

    # -- the relays ----------------------------------------------------------------------------

    async def relay_read(self, home: str, channel_id: str) -> Response:
        """The reader's side, relayed to ``home``: its answer, its body streamed as it comes."""
        client = _client()
        upstream_request = client.build_request(
            "GET", f"{home}/api/transfer/{channel_id}", headers=_forwarded()
        )
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            await _close(client)
            raise _unreachable(home, exc) from None
        if upstream.status_code != 200:
            try:
                return await _passed_on(upstream)
            finally:
                await _close(client, upstream)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                raise RelayBroken(f"transfer {channel_id} cut short at its home: {exc}") from exc
            finally:
                await _close(client, upstream)

        response = Response(
            body(),
            content_type="application/octet-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        response.timeout = None  # as the home's reader
        return response

    async def relay_write(self, home: str, channel_id: str) -> Response:
        """The writer's side, relayed to ``home``: the body streamed up as it comes; the home's
        answer."""
        client = _client()
        upstream_request = client.build_request(
            "POST",
            f"{home}/api/transfer/{channel_id}",
            headers=_forwarded(),
            content=_body(request.body),
        )
        try:
            upstream = await client.send(upstream_request, stream=True)
            try:
                return await _passed_on(upstream)
            finally:
                await _close(client, upstream)
        except httpx.HTTPError as exc:
            await _close(client)
            raise _unreachable(home, exc) from None


def _client() -> httpx.AsyncClient:
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=None, write=None, pool=CONNECT_TIMEOUT)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)


def _forwarded() -> dict[str, str]:
    headers = {name: value for name in FORWARDED if (value := request.headers.get(name))}
    headers[RELAYED] = "1"
    return headers


async def _body(body: Any) -> AsyncIterator[bytes]:
    async for chunk in body:
        if chunk:
            yield chunk


async def _passed_on(upstream: httpx.Response) -> Response:
    content = await upstream.aread()
    return Response(
        content,
        status=upstream.status_code,
        content_type=upstream.headers.get("content-type", "application/json"),
    )


async def _close(client: httpx.AsyncClient, upstream: httpx.Response | None = None) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
        if upstream is not None:
            await upstream.aclose()
        await client.aclose()


def _unreachable(home: str, exc: Exception) -> TransferError:
    return TransferError(
        502,
        "transfer_failed",
        f"the instance holding the channel ({home}) cannot be reached: {type(exc).__name__}",
    )
