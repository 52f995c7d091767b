"""Transfer channels: a writer's request body streamed to a reader's response, in bounded memory.

A :class:`Channel` starts empty (``POST /api/transfer``, or the jobs API for a payload or a
result). One reader (``GET``) and one writer (``POST``) attach to it, in either order, and each
waits for the other until the channel's TTL (``TRANSFER_TTL``) passes; the TTL no longer applies
once both are there. The writer's body then goes to the reader chunk by chunk through an
unbuffered memory channel: the writer takes its next chunk from its client only after the reader
took the previous one, so a slow reader slows the writer's client down (TCP backpressure, through
:mod:`nfrx.server.request_body`) and a transfer holds about one request-body high-water mark plus
one chunk in the server, whatever its size.

How a transfer ends (:class:`Outcome`) is decided once, by :meth:`Channel.end`:

* ``complete``: the writer's body ended and the reader was handed every byte; the reader's
  response ends normally and the writer gets 200.
* ``failed``: a side left or broke. A reader mid-body has its connection cut
  (:class:`~nfrx.server.proxy.RelayBroken`: never a silently truncated 200); a writer still
  connected, or a side still waiting for its peer, gets 502 ``transfer_failed``.
* ``expired``: the TTL passed before both sides attached: 410 ``transfer_expired``.
* ``closed``: the server closed it (its job was cancelled or lost its worker): 410
  ``transfer_closed``; a reader mid-body is cut.

An ended channel leaves the registry at once, so its id then answers 404 ``transfer_not_found``.
Ending never blocks, so it is safe in every ``finally`` and in the app's per-request cleanups.
:meth:`TransferChannels.run` is the one background task: it expires channels nobody completed
within the TTL.

Several instances (``REDIS_URL``): the registry stays per instance. Each channel's *home*, the
instance that created it, is shared (a Redis key with the channel's TTL naming the home's
advertised URL); a side reaching another instance is relayed to the home over HTTP with the same
backpressure (:mod:`.homes`). Bytes go instance to instance, never through Redis.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nfrx.server.proxy import RelayBroken

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

log = logging.getLogger("nfrx.transfer")

MAX_OPEN_CHANNELS: Final = 10_000
"""Channels that may be open at once (waiting or streaming); more answer 503."""


class Outcome:
    COMPLETE: Final = "complete"
    FAILED: Final = "failed"
    EXPIRED: Final = "expired"
    CLOSED: Final = "closed"


class Side:
    READER: Final = "reader"
    WRITER: Final = "writer"


class TransferError(Exception):
    """A transfer request that cannot go on; ``status`` and ``code`` are the original nfrx's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def rfc3339_seconds(timestamp: float) -> str:
    """UTC, second precision, ``Z`` suffix, as the original's jobs and transfer APIs write
    times: ``2026-01-31T01:00:00Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def not_found() -> TransferError:
    return TransferError(
        404, "transfer_not_found", "no such transfer channel (unknown, finished or expired)"
    )


_ENDED: Final = {
    Outcome.FAILED: (502, "transfer_failed", "the transfer failed"),
    Outcome.EXPIRED: (
        410,
        "transfer_expired",
        "the other side did not attach within the channel's TTL",
    ),
    Outcome.CLOSED: (410, "transfer_closed", "the transfer was closed by the server"),
}


@attrs.define(eq=False)
class Channel:
    """One transfer. Its sides are request handlers; :meth:`end` is how anyone stops it."""

    id: str
    job_id: str | None
    """The job that offered it (closed with the job), or None for a direct channel."""
    expires_at: float
    """``trio.current_time()`` until which a side waits for its peer."""
    expires_wall: float
    """The same instant on the wall clock (``expires_at`` of the API)."""
    _registry: TransferChannels
    reader: bool = False
    writer: bool = False
    outcome: str | None = None
    reason: str = ""
    bytes_relayed: int = 0
    _body_done: bool = False
    """The writer's whole body was handed over (the end is in the memory channel)."""
    _ready: trio.Event = attrs.field(factory=trio.Event)
    """Set when both sides are attached, or the channel ended."""
    _ended: trio.Event = attrs.field(factory=trio.Event)
    _send: trio.MemorySendChannel[bytes] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[bytes] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Unbuffered: a chunk changes hands only when the reader is ready for it.
        self._send, self._receive = trio.open_memory_channel[bytes](0)

    @property
    def attached(self) -> bool:
        return self.reader and self.writer

    def attach(self, side: str) -> None:
        """Take ``side``; raises 409 ``transfer_in_use`` if it is taken."""
        if self.reader if side == Side.READER else self.writer:
            raise TransferError(
                409, "transfer_in_use", f"this channel already has a {side} attached"
            )
        if side == Side.READER:
            self.reader = True
        else:
            self.writer = True
        if self.attached:
            self._ready.set()
        self._registry.changed()

    def end(self, outcome: str, reason: str = "") -> None:
        """End the transfer (the first outcome wins; later calls do nothing). Never blocks."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.reason = reason
        # Wakes both sides: a writer in send() gets BrokenResourceError, a reader in receive()
        # EndOfChannel or ClosedResourceError; either then reads the outcome.
        self._send.close()
        self._receive.close()
        self._ready.set()
        self._ended.set()
        self._registry.forget(self)

    def abandon(self, side: str) -> None:
        """``side``'s request is over (a cleanup): fail the transfer unless that side's part
        is done -- the writer's body all handed over, or the reader's response finished."""
        if side == Side.WRITER and self._body_done:
            return
        self.end(Outcome.FAILED, f"the {side} left")

    def error(self) -> TransferError:
        status, code, message = _ENDED.get(self.outcome or Outcome.FAILED, _ENDED[Outcome.FAILED])
        return TransferError(status, code, f"{message} ({self.reason})" if self.reason else message)

    async def wait_ready(self) -> None:
        """Return when the other side is attached. Raises :class:`TransferError` when the
        channel ends first, its TTL passing included."""
        with trio.move_on_at(self.expires_at):
            await self._ready.wait()
        if not self._ready.is_set():
            self.end(Outcome.EXPIRED, "no peer within the TTL")
        if self.outcome is not None:
            raise self.error()

    async def write(self, body: AsyncIterator[bytes]) -> int:
        """Relay ``body`` (the writer's request body) to the reader; return its size once the
        reader was handed every byte. Raises :class:`TransferError` if the transfer ends any
        other way. Cancelled before the body ended (the writer's client left), it fails the
        transfer, so the reader sees a cut, not an end."""
        try:
            async for chunk in body:
                if chunk:
                    await self._send.send(chunk)
                    self.bytes_relayed += len(chunk)
            self._body_done = True
            self._send.close()  # EndOfChannel at the reader: the real end of the body
            await self._ended.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader's side or the server ended it: the outcome says how
        finally:
            self.abandon(Side.WRITER)
        if self.outcome != Outcome.COMPLETE:
            raise self.error()
        return self.bytes_relayed

    async def read(self) -> AsyncIterator[bytes]:
        """The writer's bytes as they come (the reader's response body). Raises
        :class:`~nfrx.server.proxy.RelayBroken` if the writer did not finish, so the app cuts
        the reader's connection instead of ending the body. Closed early (the reader left), it
        fails the transfer."""
        try:
            while True:
                try:
                    chunk = await self._receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    break
                yield chunk
            if self._body_done and self.outcome is None:
                self.end(Outcome.COMPLETE)
                return
            raise RelayBroken(f"transfer {self.id} cut short: {self.error().message}")
        finally:
            self.end(Outcome.FAILED, "the reader left")  # a no-op once complete


class TransferChannels:
    """The open channels of one server (see the module docstring)."""

    def __init__(self, ttl: float, *, limit: int = MAX_OPEN_CHANNELS) -> None:
        self.ttl = ttl
        self.limit = limit
        self._open: dict[str, Channel] = {}
        self._waiting: collections.deque[Channel] = collections.deque()
        """Channels in creation order, hence TTL order (the TTL is fixed): the expiry queue."""
        self._created = trio.Event()
        self.listeners: list[Callable[[], None]] = []
        """Called after every change (a channel created, attached or ended)."""
        self.totals: collections.Counter[str] = collections.Counter()
        """Ended channels by outcome."""
        self.bytes_total = 0
        """Bytes relayed by ended channels."""

    def create(self, job_id: str | None = None) -> Channel:
        """A new channel; raises 503 ``too_many_transfers`` past the limit."""
        if len(self._open) >= self.limit:
            raise TransferError(
                503, "too_many_transfers", f"{self.limit} transfer channels are open; retry later"
            )
        channel = Channel(
            str(uuid.uuid4()),
            job_id,
            trio.current_time() + self.ttl,
            time.time() + self.ttl,
            self,
        )
        self._open[channel.id] = channel
        self._waiting.append(channel)
        self._created.set()
        self.changed()
        return channel

    def __contains__(self, channel_id: str) -> bool:
        """Whether this instance holds channel ``channel_id`` (open)."""
        return channel_id in self._open

    def attach(self, channel_id: str, side: str) -> Channel:
        """The channel ``channel_id`` with ``side`` taken. Raises 404 (unknown, ended or past its
        TTL) or 409 (``side`` taken)."""
        channel = self._open.get(channel_id)
        if channel is None:
            raise not_found()
        if not channel.attached and trio.current_time() >= channel.expires_at:
            channel.end(Outcome.EXPIRED, "no peer within the TTL")
            raise not_found()
        channel.attach(side)
        return channel

    def close_job(self, job_id: str, reason: str) -> None:
        """End every open channel of job ``job_id`` as ``closed``."""
        for channel in [c for c in self._open.values() if c.job_id == job_id]:
            channel.end(Outcome.CLOSED, reason)

    def forget(self, channel: Channel) -> None:
        """Called by :meth:`Channel.end`: the channel leaves the registry and is counted."""
        if self._open.pop(channel.id, None) is not None:
            self.totals[channel.outcome or Outcome.FAILED] += 1
            self.bytes_total += channel.bytes_relayed
            if channel.outcome != Outcome.COMPLETE:
                log.info(
                    "transfer %s %s after %d bytes%s",
                    channel.id,
                    channel.outcome,
                    channel.bytes_relayed,
                    f": {channel.reason}" if channel.reason else "",
                )
            self.changed()

    def changed(self) -> None:
        for listener in self.listeners:
            listener()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire channels still waiting for a side when their TTL passes, until cancelled (the
        server's root nursery owns this task)."""
        task_status.started()
        waiting = self._waiting
        while True:
            now = trio.current_time()
            while waiting and (
                waiting[0].outcome is not None
                or waiting[0].attached
                or waiting[0].expires_at <= now
            ):
                channel = waiting.popleft()
                if channel.outcome is None and not channel.attached:
                    channel.end(Outcome.EXPIRED, "no peer within the TTL")
            if waiting:
                await trio.sleep_until(waiting[0].expires_at)
            else:
                self._created = trio.Event()
                await self._created.wait()

    def state(self) -> dict[str, Any]:
        """The ``transfer`` section of ``/api/state``."""
        waiting = [channel for channel in self._open.values() if not channel.attached]
        return {
            "open": len(self._open),
            "waiting": len(waiting),
            "streaming": len(self._open) - len(waiting),
            "sides_waiting": sum(channel.reader + channel.writer for channel in waiting),
            "completed_total": self.totals[Outcome.COMPLETE],
            "failed_total": self.totals[Outcome.FAILED],
            "expired_total": self.totals[Outcome.EXPIRED],
            "closed_total": self.totals[Outcome.CLOSED],
            "bytes_total": self.bytes_total
            + sum(channel.bytes_relayed for channel in self._open.values()),
        }


class ChannelsCollector:
    """Prometheus series of a :class:`TransferChannels`, read at scrape time (labels: fixed
    sets)."""

    def __init__(self, channels: TransferChannels) -> None:
        self._channels = channels

    def describe(self) -> list[Any]:
        return self._families()

    def collect(self) -> list[Any]:
        families = self._families()
        open_, ended, relayed = families
        state = self._channels.state()
        open_.add_metric(["waiting"], state["waiting"])
        open_.add_metric(["streaming"], state["streaming"])
        for outcome in (Outcome.COMPLETE, Outcome.FAILED, Outcome.EXPIRED, Outcome.CLOSED):
            ended.add_metric([outcome], self._channels.totals[outcome])
        relayed.add_metric([], state["bytes_total"])
        return families

    @staticmethod
    def _families() -> list[Any]:
        return [
            GaugeMetricFamily(
                "nfrx_transfers_open",
                "Transfer channels open, waiting for a side or streaming.",
                labels=["state"],
            ),
            CounterMetricFamily(
                "nfrx_transfers",
                "Transfer channels ended, by how (complete, failed, expired, closed).",
                labels=["result"],
            ),
            CounterMetricFamily("nfrx_transfer_bytes", "Bytes relayed through transfer channels."),
        ]
