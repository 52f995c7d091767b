"""The shared job store on a real redis-server: every step, two instances (two stores on one
Redis) working on the same jobs, concurrent claimers, deadlines applied once, and Redis gone."""

from __future__ import annotations

import gc
import math

import pytest
import trio
import trio.testing

from nfrx.plugins.jobs.model import (
    Claimer,
    InvalidState,
    JobNotFound,
    JobSpec,
    LeaseMismatch,
    Status,
    StoreFull,
    StoreUnavailable,
    TransferInfo,
)
from nfrx.plugins.jobs.redis_store import RedisJobStore
from tests.fixtures.redis_server import RedisServer
from tests.plugins.jobs.conftest import running_stores

CAP = 20.0
ANY = Claimer()


def info(key: str = "payload") -> TransferInfo:
    return TransferInfo(key=key, channel_id="c", method="POST", url="/api/transfer/c", expires_at=0)


async def until_due(store: RedisJobStore) -> None:
    """Until the store's first deadline is due on Redis' clock (which the wait translates to
    this process' clock as last read: it may wake early, then waits again)."""
    while await store.next_deadline() > trio.current_time():
        seen = await store.version()
        with trio.move_on_at(await store.next_deadline()):
            await store.wait_changed(seen)


async def test_a_job_goes_through_its_life_across_two_instances(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 2, lease_seconds=60.0) as (a, b):
            job = await a.create(JobSpec(type="asr", metadata={"n": 12345678901234567}))
            assert job.status == Status.QUEUED
            seen = await b.get(job.id)
            assert seen is not None
            assert seen.queue_position == 1
            assert seen.metadata == {"n": 12345678901234567}
            subscription = await a.subscribe(job.id)
            assert subscription is not None
            claim = await b.claim_next(Claimer(worker_id="w", types=frozenset({"asr"})))
            assert claim is not None
            assert claim.job.claimed_worker_id == "w"
            with pytest.raises(LeaseMismatch):
                await a.set_status(job.id, "not-the-token", Status.RUNNING)
            await b.offer_transfer(job.id, claim.lease_token, "payload", info())
            await a.set_status(job.id, claim.lease_token, Status.RUNNING, progress={"p": 1})
            _, lease_end = await a.heartbeat(job.id, claim.lease_token)
            assert lease_end > 0
            await b.set_status(job.id, claim.lease_token, Status.COMPLETED)
            batch = await a.events_after(job.id, subscription.cursor)
            assert batch is not None
            names = [(e.name, e.data.get("status")) for e in batch.events]
            assert names == [
                ("status", Status.CLAIMED),
                ("payload", None),
                ("status", Status.AWAITING_PAYLOAD),
                ("status", Status.RUNNING),
                ("status", Status.COMPLETED),
            ]
            with pytest.raises(InvalidState):
                await b.set_status(job.id, claim.lease_token, Status.RUNNING)
            done, changed = await b.cancel(job.id)
            assert (done.status, changed) == (Status.COMPLETED, False)
            await a.unsubscribe(job.id)
            await a.expire()
            assert a.totals()["completed"] == 1
            assert a.summary(trio.current_time())["completed_jobs"] == 1
            assert [j.id for j in a.recent(12)] == [job.id]
            with pytest.raises(JobNotFound):
                await a.cancel("nope")
            assert await a.get("nope") is None


async def test_priority_then_fifo_and_affinity(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 1) as (store,):
            low = await store.create(JobSpec(type="t"))
            high = await store.create(JobSpec(type="t", priority=5))
            mine = await store.create(JobSpec(type="t", worker_group="g"))
            later = await store.create(JobSpec(type="t"))
            order = []
            while (claim := await store.claim_next(ANY)) is not None:
                order.append(claim.job.id)
            assert order == [high.id, low.id, later.id]
            claim = await store.claim_next(Claimer(worker_group="g"))
            assert claim is not None
            assert claim.job.id == mine.id


async def test_two_claimers_waiting_on_two_instances_claim_two_jobs_once_each(
    redis_url: str,
) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 3) as (a, b, c):
            claimed: list[str] = []

            async def claimer(store: object) -> None:
                from nfrx.plugins.jobs.redis_store import RedisJobStore

                assert isinstance(store, RedisJobStore)
                while True:
                    seen = await store.queue_version()
                    claim = await store.claim_next(ANY)
                    if claim is not None:
                        claimed.append(claim.job.id)
                        return
                    await store.wait_queue(seen)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(claimer, a)
                nursery.start_soon(claimer, b)
                await trio.testing.wait_all_tasks_blocked()  # parked (either order is correct)
                first = await c.create(JobSpec(type="t"))
                second = await c.create(JobSpec(type="t"))
            assert sorted(claimed) == sorted([first.id, second.id])


async def test_many_claimers_race_for_few_jobs(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 2) as (a, b):
            jobs = {(await a.create(JobSpec(type="t"))).id for _ in range(10)}
            claimed: list[str] = []

            async def claim(store: object) -> None:
                assert hasattr(store, "claim_next")
                result = await store.claim_next(ANY)
                if result is not None:
                    claimed.append(result.job.id)

            async with trio.open_nursery() as nursery:
                for index in range(16):
                    nursery.start_soon(claim, (a, b)[index % 2])
            assert sorted(claimed) == sorted(jobs)  # each once, none lost


async def test_an_expired_lease_requeues_once_whichever_instance_applies_it(
    redis_url: str,
) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 2, lease_seconds=0.2) as (a, b):
            job = await a.create(JobSpec(type="t"))
            claim = await a.claim_next(ANY)
            assert claim is not None
            await until_due(a)
            assert [j.status for j in await a.expire()] == [Status.QUEUED]
            # b hears that the job left its worker (it closes its channels), applies nothing
            assert [j.status for j in await b.expire()] == [Status.QUEUED]
            assert (await b.expire(), b.totals()["lease_expired"]) == ([], 1)
            with pytest.raises(InvalidState):
                await a.heartbeat(job.id, claim.lease_token)


async def test_the_client_ttl_cancels_a_job_nobody_follows(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 1, client_ttl=0.2) as (store,):
            job = await store.create(JobSpec(type="t"))
            await until_due(store)
            (canceled,) = await store.expire()
            assert canceled.id == job.id
            assert canceled.status == Status.CANCELED
            assert canceled.error is not None
            assert canceled.error["code"] == "client_inactive"
            # what is left is its retention (300 s), not the TTL again
            assert 250 < await store.next_deadline() - trio.current_time() < math.inf


async def test_retention_forgets_finished_jobs_and_the_cap_makes_room(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 1, retention=3600.0, max_jobs=2) as (store,):
            first = await store.create(JobSpec(type="t"))
            await store.create(JobSpec(type="t"))
            with pytest.raises(StoreFull):
                await store.create(JobSpec(type="t"))
            await store.cancel(first.id)
            third = await store.create(JobSpec(type="t"))  # the canceled one made room
            assert await store.get(first.id) is None
            assert await store.get(third.id) is not None


async def test_a_canceled_job_wakes_a_waiter_on_another_instance(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 2) as (a, b):
            job = await a.create(JobSpec(type="t"))
            subscription = await a.subscribe(job.id)
            assert subscription is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.wait_job, job.id, subscription.cursor)
                await trio.testing.wait_all_tasks_blocked()
                await b.cancel(job.id)
            batch = await a.events_after(job.id, subscription.cursor)
            assert batch is not None
            assert batch.events[-1].data["status"] == Status.CANCELED
            # b canceled it: a's deadline pass reports it (its transfer channels close there)
            assert [j.id for j in await a.expire()] == [job.id]


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # coredis' streams of the dead connection
async def test_redis_gone_is_an_error_that_says_so(
    redis_url: str, redis_server: RedisServer
) -> None:
    with trio.fail_after(CAP):
        async with running_stores(redis_url, 1) as (store,):
            await store.create(JobSpec(type="t"))
            redis_server.stop()
            with pytest.raises(StoreUnavailable, match="cannot be reached"):
                await store.create(JobSpec(type="t"))
            with pytest.raises(StoreUnavailable):
                await store.claim_next(ANY)
        gc.collect()  # here, under this test's filter, not in a later test
