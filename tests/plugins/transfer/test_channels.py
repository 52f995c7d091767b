"""Transfer channels without HTTP, on a mock clock: attaching, the TTL, the relay's backpressure,
and how each kind of end reaches each side."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from nfrx.plugins.transfer.channels import Outcome, Side, TransferChannels, TransferError
from nfrx.server.proxy import RelayBroken

if TYPE_CHECKING:
    from nfrx.plugins.transfer.channels import Channel

TTL = 60.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def pair(channels: TransferChannels) -> Channel:
    channel = channels.create()
    channels.attach(channel.id, Side.READER)
    channels.attach(channel.id, Side.WRITER)
    return channel


class chunks:  # a class, not a generator: the relay may stop reading it early
    """``n`` chunks of 1000 bytes (an iterator, not a generator: the relay may stop early)."""

    def __init__(self, n: int, produced: list[int] | None = None) -> None:
        self._items = iter(range(n))
        self._produced = produced

    def __aiter__(self) -> chunks:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        i = next(self._items, None)
        if i is None:
            raise StopAsyncIteration
        if self._produced is not None:
            self._produced.append(i)
        return bytes([i % 256]) * 1000


async def test_unknown_and_taken_sides_are_refused() -> None:
    channels = TransferChannels(TTL)
    with pytest.raises(TransferError) as unknown:
        channels.attach("nope", Side.READER)
    assert (unknown.value.status, unknown.value.code) == (404, "transfer_not_found")
    channel = channels.create()
    channels.attach(channel.id, Side.READER)
    with pytest.raises(TransferError) as taken:
        channels.attach(channel.id, Side.READER)
    assert (taken.value.status, taken.value.code) == (409, "transfer_in_use")


async def test_the_limit_of_open_channels_answers_503() -> None:
    channels = TransferChannels(TTL, limit=1)
    channels.create()
    with pytest.raises(TransferError) as full:
        channels.create()
    assert (full.value.status, full.value.code) == (503, "too_many_transfers")


async def test_a_side_waiting_past_the_ttl_gets_410_and_the_id_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    channels = TransferChannels(TTL)
    channel = channels.create()
    channels.attach(channel.id, Side.READER)
    start = trio.current_time()
    with pytest.raises(TransferError) as expired:
        await channel.wait_ready()
    assert (expired.value.status, expired.value.code) == (410, "transfer_expired")
    assert trio.current_time() == pytest.approx(start + TTL)
    with pytest.raises(TransferError) as gone:
        channels.attach(channel.id, Side.WRITER)
    assert gone.value.status == 404


async def test_the_sweeper_expires_channels_nobody_attached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    channels = TransferChannels(TTL)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(channels.run)
        channels.create()
        await trio.sleep(TTL / 2)
        paired = pair(channels)
        channels.create()
        await trio.sleep_until(start + TTL + 1)
        assert channels.state()["waiting"] == 1  # the first one expired, the paired one stays
        await trio.sleep_until(start + TTL * 1.5 + 1)
        assert channels.state() | {"bytes_total": 0} == {
            "open": 1,
            "waiting": 0,
            "streaming": 1,
            "sides_waiting": 0,
            "completed_total": 0,
            "failed_total": 0,
            "expired_total": 2,
            "closed_total": 0,
            "bytes_total": 0,
        }
        assert paired.outcome is None
        nursery.cancel_scope.cancel()


async def test_bytes_flow_in_order_with_backpressure_and_both_sides_see_the_end() -> None:
    channels = TransferChannels(TTL)
    channel = pair(channels)
    produced: list[int] = []
    received = bytearray()
    sizes: list[int] = []
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            sizes.append(await channel.write(chunks(50, produced)))

        nursery.start_soon(write)
        reader = channel.read()
        async for chunk in reader:
            received += chunk
            # Unbuffered: the writer never took more than one chunk beyond what was read.
            assert len(produced) <= len(received) // 1000 + 1
    assert bytes(received) == b"".join(bytes([i]) * 1000 for i in range(50))
    assert sizes == [50_000]
    assert channel.outcome == Outcome.COMPLETE
    assert channels.state()["completed_total"] == 1
    assert channels.state()["bytes_total"] == 50_000


async def test_a_writer_that_dies_mid_body_cuts_the_reader() -> None:
    channels = TransferChannels(TTL)
    channel = pair(channels)
    got = 0
    with pytest.RaisesGroup(pytest.RaisesExc(RelayBroken, match="the writer left")):
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                with trio.CancelScope() as scope:
                    writer_scope.append(scope)
                    await channel.write(chunks(1000))

            writer_scope: list[trio.CancelScope] = []
            nursery.start_soon(write)
            async for chunk in channel.read():
                got += len(chunk)
                if got == 3000:
                    writer_scope[0].cancel()  # the writer's client disconnects
    assert channel.outcome == Outcome.FAILED
    assert got == 3000


async def test_a_reader_that_leaves_fails_the_writer_with_502() -> None:
    channels = TransferChannels(TTL)
    channel = pair(channels)
    reader = channel.read()
    async with trio.open_nursery() as nursery:
        errors: list[TransferError] = []

        async def write() -> None:
            try:
                await channel.write(chunks(1000))
            except TransferError as exc:
                errors.append(exc)

        nursery.start_soon(write)
        await anext(reader)
        await reader.aclose()  # type: ignore[attr-defined]
    (error,) = errors
    assert (error.status, error.code) == (502, "transfer_failed")
    assert "the reader left" in error.message


async def test_a_writer_that_leaves_after_its_whole_body_does_not_fail_the_transfer() -> None:
    channels = TransferChannels(TTL)
    channel = pair(channels)
    received = bytearray()
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            with scope:
                await channel.write(chunks(2))

        nursery.start_soon(write)
        async for chunk in channel.read():
            received += chunk
            if len(received) == 2000:
                await trio.testing.wait_all_tasks_blocked()  # the writer handed over its end...
                scope.cancel()  # ...and then its client leaves
    assert channel.outcome == Outcome.COMPLETE


async def test_closing_a_job_ends_its_channels_for_every_kind_of_side() -> None:
    channels = TransferChannels(TTL)
    waiting = channels.create(job_id="j1")
    channels.attach(waiting.id, Side.WRITER)
    streaming = channels.create(job_id="j1")
    other = channels.create(job_id="j2")
    channels.attach(streaming.id, Side.READER)
    channels.attach(streaming.id, Side.WRITER)
    ends: list[tuple[str, object]] = []

    async def wait() -> None:
        try:
            await waiting.wait_ready()
        except TransferError as exc:
            ends.append(("waiting", (exc.status, exc.code)))

    async def write() -> None:
        try:
            await streaming.write(chunks(1000))
        except TransferError as exc:
            ends.append(("writer", (exc.status, exc.code)))

    async def read() -> None:
        try:
            async for _ in streaming.read():
                channels.close_job("j1", "the job was canceled")
        except RelayBroken:
            ends.append(("reader", "cut"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        nursery.start_soon(write)
        nursery.start_soon(read)
    assert sorted(ends) == [
        ("reader", "cut"),
        ("waiting", (410, "transfer_closed")),
        ("writer", (410, "transfer_closed")),
    ]
    assert other.outcome is None
