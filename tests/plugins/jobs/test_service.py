"""The jobs service's streams and background task, without HTTP, on a mock clock: event stream
order and close delay, the claim stream's cancel events and give-backs, long-poll claims, and
deadlines that close a job's transfer channels."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from nfrx.plugins.jobs.memory import MemoryJobStore
from nfrx.plugins.jobs.model import Claimer, InvalidState, JobSpec, Status
from nfrx.plugins.jobs.service import KEEPALIVE, KEEPALIVE_INTERVAL, JobsService
from nfrx.plugins.jobs.store import StoreSettings
from nfrx.plugins.transfer.channels import Outcome, TransferChannels

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def service(*, close_delay: float = 5.0, **settings: Any) -> JobsService:
    store = MemoryJobStore(StoreSettings(**{"client_ttl": 0.0, **settings}))
    return JobsService(store, TransferChannels(60.0), sse_close_delay=close_delay)


def parse(chunk: bytes) -> tuple[str, dict[str, Any]]:
    name, data = chunk.decode().split("\n")[:2]
    return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


async def drain(stream: AsyncIterator[bytes]) -> list[tuple[str, dict[str, Any]]]:
    return [parse(chunk) async for chunk in stream]


async def test_a_full_job_streams_every_event_then_ends_after_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = service(close_delay=5.0)
    job = await jobs.create(JobSpec(type="asr.transcribe"))
    events: list[tuple[str, dict[str, Any]]] = []
    ended_at = math.inf

    async def follow() -> None:
        nonlocal ended_at
        events.extend(await drain(jobs.events(job.id)))
        ended_at = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        await trio.testing.wait_all_tasks_blocked()
        claim = await jobs.claim(Claimer(worker_id="w1"), 0)
        assert claim is not None
        lease = claim.lease_token
        await jobs.offer_transfer(job.id, lease, "payload", "payload", {"protocol": "demo"})
        await jobs.set_status(job.id, lease, Status.RUNNING, progress={"percent": 50})
        await jobs.offer_transfer(job.id, lease, "result", "result", None)
        await jobs.set_status(job.id, lease, Status.COMPLETED)
        finished_at = trio.current_time()
    assert [(name, data.get("status")) for name, data in events] == [
        ("status", Status.QUEUED),
        ("status", Status.CLAIMED),
        ("payload", None),
        ("status", Status.AWAITING_PAYLOAD),
        ("status", Status.RUNNING),
        ("result", None),
        ("status", Status.AWAITING_RESULT),
        ("status", Status.COMPLETED),
    ]
    assert events[2][1]["method"] == "POST"
    assert events[2][1]["properties"] == {"protocol": "demo"}
    assert events[4][1]["progress"] == {"percent": 50}
    assert events[5][1]["method"] == "GET"
    assert ended_at == pytest.approx(finished_at + 5.0)


async def test_a_late_subscriber_still_gets_the_offered_channels() -> None:
    jobs = service(close_delay=0)
    job = await jobs.create(JobSpec(type="t"))
    claim = await jobs.claim(Claimer(), 0)
    assert claim is not None
    await jobs.offer_transfer(job.id, claim.lease_token, "payload", "audio", None)
    await jobs.set_status(job.id, claim.lease_token, Status.FAILED)
    events = await drain(jobs.events(job.id))  # ends at once: finished, no delay
    assert [name for name, _ in events] == ["status", "payload"]
    assert events[1][1]["key"] == "audio"


async def test_a_negative_delay_keeps_the_stream_open_with_keepalives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = service(close_delay=-1)
    job = await jobs.create(JobSpec(type="t"))
    await jobs.cancel(job.id)
    stream = jobs.events(job.id)
    chunks = [await anext(stream)]
    start = trio.current_time()
    chunks.append(await anext(stream))
    assert chunks[1] == KEEPALIVE
    assert trio.current_time() == pytest.approx(start + KEEPALIVE_INTERVAL)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_the_claim_stream_announces_a_canceled_job_and_respects_max_active(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = service()
    first = await jobs.create(JobSpec(type="t"))
    second = await jobs.create(JobSpec(type="t"))
    stream = jobs.claim_stream(Claimer(worker_id="w1"), max_active=1)
    name, claimed = parse(await anext(stream))
    assert (name, claimed["job_id"], claimed["claimed_worker_id"]) == ("job", first.id, "w1")
    assert claimed["lease_token"]
    received: list[tuple[str, dict[str, Any]]] = []

    async def read_one() -> None:
        received.append(parse(await anext(stream)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_one)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []  # one active job: the second waits
        await jobs.cancel(first.id)
    assert received == [("cancel", {"job_id": first.id, "status": Status.CANCELED})]
    name, claimed = parse(await anext(stream))  # room again: the second comes
    assert (name, claimed["job_id"]) == ("job", second.id)
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_claim_the_stream_could_not_deliver_goes_back_to_the_queue() -> None:
    jobs = service()
    job = await jobs.create(JobSpec(type="t"))
    stream = jobs.claim_stream(Claimer())
    await anext(stream)  # claimed, and parked at the yield: the write may not have happened
    await stream.aclose()  # type: ignore[attr-defined]
    back = await jobs.store.get(job.id)
    assert back is not None
    assert (back.status, back.queue_position) == (Status.QUEUED, 1)


async def test_a_long_poll_claim_waits_for_a_job_or_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = service()
    start = trio.current_time()
    assert await jobs.claim(Claimer(), 10) is None
    assert trio.current_time() == pytest.approx(start + 10)
    async with trio.open_nursery() as nursery:
        claims: list[str] = []

        async def claim() -> None:
            got = await jobs.claim(Claimer(), 10)
            claims.append(got.job.id if got else "")

        nursery.start_soon(claim)
        nursery.start_soon(claim)
        await trio.testing.wait_all_tasks_blocked()
        created = [(await jobs.create(JobSpec(type="t"))).id for _ in range(2)]
        waited_from = trio.current_time()
    assert sorted(claims) == sorted(created)
    assert trio.current_time() == waited_from  # neither waited out its 10 s


async def test_deadlines_close_the_channels_of_the_jobs_they_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = service(lease_seconds=10.0)
    job = await jobs.create(JobSpec(type="t"))
    claim = await jobs.claim(Claimer(), 0)
    assert claim is not None
    offered = await jobs.offer_transfer(job.id, claim.lease_token, "payload", "payload", None)
    channel = jobs.channels.attach(offered.channel_id, "reader")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(jobs.run)
        await trio.sleep(11)
        nursery.cancel_scope.cancel()
    assert channel.outcome == Outcome.CLOSED
    requeued = await jobs.store.get(job.id)
    assert requeued is not None
    assert requeued.status == Status.QUEUED


async def test_a_refused_offer_leaves_no_channel() -> None:
    jobs = service()
    job = await jobs.create(JobSpec(type="t"))
    with pytest.raises(InvalidState, match="the job is queued: no worker holds it"):
        await jobs.offer_transfer(job.id, "x", "payload", "payload", None)
    assert jobs.channels.state()["open"] == 0
    assert jobs.channels.totals == {}
