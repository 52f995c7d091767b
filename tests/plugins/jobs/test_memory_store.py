"""The in-memory job store and its state machine, on a mock clock: ordering, affinity, leases,
client TTL, retention and the cap, event logs, and waits without lost wake-ups."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from nfrx.plugins.jobs.memory import EVENT_LOG, MAX_TRANSFERS_PER_JOB, MemoryJobStore
from nfrx.plugins.jobs.model import (
    ALLOWED_FROM,
    STATUSES,
    TERMINAL,
    Claimer,
    InvalidState,
    JobNotFound,
    JobSpec,
    LeaseMismatch,
    Op,
    Status,
    StoreFull,
    TransferInfo,
)
from nfrx.plugins.jobs.store import StoreSettings

LEASE = 10.0
TTL = 30.0


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def store(**settings: object) -> MemoryJobStore:
    defaults: dict[str, object] = {"client_ttl": 0.0, "lease_seconds": LEASE, "retention": 60.0}
    return MemoryJobStore(StoreSettings(**{**defaults, **settings}))  # type: ignore[arg-type]


def info(key: str = "payload") -> TransferInfo:
    return TransferInfo(key=key, channel_id="c", method="POST", url="/api/transfer/c", expires_at=0)


async def expire_at(jobs: MemoryJobStore, when: float) -> list[str]:
    """Sleep until ``when`` (mock clock) and apply deadlines; the statuses that changed."""
    await trio.sleep_until(when)
    return [job.status for job in await jobs.expire()]


def test_the_transition_table_covers_every_operation() -> None:
    ops = {v for k, v in vars(Op).items() if not k.startswith("_")}
    assert set(ALLOWED_FROM) == ops
    for allowed in ALLOWED_FROM.values():
        assert allowed <= set(STATUSES)
        assert not allowed & TERMINAL  # nothing moves a finished job


async def test_priority_first_then_fifo_and_queue_positions() -> None:
    jobs = store()
    low1 = await jobs.create(JobSpec(type="t"))
    high1 = await jobs.create(JobSpec(type="t", priority=5))
    low2 = await jobs.create(JobSpec(type="t"))
    high2 = await jobs.create(JobSpec(type="t", priority=5))
    positions = [(await jobs.get(j.id)).queue_position for j in (high1, high2, low1, low2)]  # type: ignore[union-attr]
    assert positions == [1, 2, 3, 4]
    order = []
    while claim := await jobs.claim_next(Claimer()):
        order.append(claim.job.id)
    assert order == [high1.id, high2.id, low1.id, low2.id]


@pytest.mark.parametrize(
    ("job", "claimer", "claimed"),
    [
        (("", ""), ("", ""), True),
        (("", ""), ("w1", "g1"), True),
        (("w1", ""), ("w1", ""), True),
        (("w1", ""), ("w2", ""), False),
        (("w1", ""), ("", "g1"), False),
        (("", "g1"), ("w9", "g1"), True),
        (("", "g1"), ("w9", "g2"), False),
        (("", "g1"), ("", ""), False),
        (("w1", "g1"), ("w1", "g1"), True),
        (("w1", "g1"), ("w1", "g2"), False),
        (("w1", "g1"), ("w2", "g1"), False),
    ],
)
async def test_affinity(job: tuple[str, str], claimer: tuple[str, str], claimed: bool) -> None:
    jobs = store()
    await jobs.create(JobSpec(type="t", worker_id=job[0], worker_group=job[1]))
    claim = await jobs.claim_next(Claimer(worker_id=claimer[0], worker_group=claimer[1]))
    assert (claim is not None) == claimed
    if claim is not None:
        assert (claim.job.claimed_worker_id, claim.job.claimed_worker_group) == claimer


async def test_types_filter_skips_to_the_first_acceptable_job() -> None:
    jobs = store()
    await jobs.create(JobSpec(type="doc.convert"))
    wanted = await jobs.create(JobSpec(type="asr.transcribe"))
    claim = await jobs.claim_next(Claimer(types=frozenset({"asr.transcribe"})))
    assert claim is not None
    assert claim.job.id == wanted.id
    assert await jobs.claim_next(Claimer(types=frozenset({"asr.transcribe"}))) is None


async def test_only_the_lease_holder_moves_a_claimed_job() -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    with pytest.raises(InvalidState):  # not claimed: nobody holds it
        await jobs.set_status(job.id, "x", Status.RUNNING)
    claim = await jobs.claim_next(Claimer())
    assert claim is not None
    with pytest.raises(LeaseMismatch):
        await jobs.set_status(job.id, None, Status.RUNNING)
    with pytest.raises(LeaseMismatch):
        await jobs.set_status(job.id, "not-the-token", Status.RUNNING)
    with pytest.raises(LeaseMismatch):
        await jobs.heartbeat(job.id, "not-the-token")
    with pytest.raises(LeaseMismatch):
        await jobs.offer_transfer(job.id, None, "payload", info())
    moved = await jobs.set_status(
        job.id, claim.lease_token, Status.RUNNING, progress={"percent": 42}
    )
    assert (moved.status, moved.progress) == (Status.RUNNING, {"percent": 42})
    done = await jobs.set_status(job.id, claim.lease_token, Status.COMPLETED)
    assert done.status == Status.COMPLETED
    with pytest.raises(InvalidState):  # finished: nothing moves it any more
        await jobs.set_status(job.id, claim.lease_token, Status.RUNNING)
    with pytest.raises(JobNotFound):
        await jobs.set_status("nope", claim.lease_token, Status.RUNNING)


async def test_without_required_leases_a_missing_token_passes_but_a_wrong_one_does_not() -> None:
    jobs = store(lease_required=False)
    job = await jobs.create(JobSpec(type="t"))
    await jobs.claim_next(Claimer())
    assert (await jobs.set_status(job.id, None, Status.RUNNING)).status == Status.RUNNING
    with pytest.raises(LeaseMismatch):
        await jobs.set_status(job.id, "wrong", Status.RUNNING)


async def test_a_worker_may_give_a_job_back(autojump_clock: trio.testing.MockClock) -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    claim = await jobs.claim_next(Claimer(worker_id="w1"))
    assert claim is not None
    await jobs.offer_transfer(job.id, claim.lease_token, "payload", info())
    back = await jobs.set_status(job.id, claim.lease_token, Status.QUEUED)
    assert (back.status, back.queue_position, back.claimed_worker_id) == (Status.QUEUED, 1, "")
    assert back.payloads == {}
    again = await jobs.claim_next(Claimer(worker_id="w2"))
    assert again is not None
    assert again.job.claim == 2
    with pytest.raises(LeaseMismatch):  # the first claim's token holds nothing now
        await jobs.heartbeat(job.id, claim.lease_token)


async def test_a_silent_worker_loses_the_job_to_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    start = trio.current_time()
    claim = await jobs.claim_next(Claimer(worker_id="w1"))
    assert claim is not None
    await trio.sleep(LEASE * 0.75)
    await jobs.heartbeat(job.id, claim.lease_token)  # renews: the first deadline is stale
    assert await expire_at(jobs, start + LEASE * 1.25) == []
    assert await expire_at(jobs, start + LEASE * 0.75 + LEASE) == [Status.QUEUED]
    requeued = await jobs.get(job.id)
    assert requeued is not None
    assert (requeued.status, requeued.queue_position, requeued.claimed_worker_id) == (
        Status.QUEUED,
        1,
        "",
    )
    with pytest.raises(InvalidState):
        await jobs.set_status(job.id, claim.lease_token, Status.COMPLETED)
    assert jobs.totals()["lease_expired"] == 1


async def test_a_silent_worker_fails_the_job_when_configured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = store(requeue_expired=False)
    job = await jobs.create(JobSpec(type="t"))
    await jobs.claim_next(Claimer())
    assert await expire_at(jobs, trio.current_time() + LEASE) == [Status.FAILED]
    failed = await jobs.get(job.id)
    assert failed is not None
    assert failed.error == {
        "code": "lease_expired",
        "message": "the worker holding the job stopped renewing its lease",
    }


async def test_client_ttl_runs_only_without_subscribers_and_polls_restart_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = store(client_ttl=TTL)
    followed = await jobs.create(JobSpec(type="t"))
    polled = await jobs.create(JobSpec(type="t"))
    forgotten = await jobs.create(JobSpec(type="t"))
    start = trio.current_time()
    assert await jobs.subscribe(followed.id) is not None
    await trio.sleep(TTL / 2)
    await jobs.touch_client(polled.id)
    assert await expire_at(jobs, start + TTL) == [Status.CANCELED]
    canceled = await jobs.get(forgotten.id)
    assert canceled is not None
    assert canceled.error == {"code": "client_inactive", "message": "client inactive"}
    assert (await jobs.get(polled.id)).status == Status.QUEUED  # type: ignore[union-attr]
    await jobs.unsubscribe(followed.id)  # its TTL starts now
    left = trio.current_time()
    assert await expire_at(jobs, start + TTL * 1.5) == [Status.CANCELED]  # the polled one
    assert await expire_at(jobs, left + TTL) == [Status.CANCELED]  # the followed one


async def test_finished_jobs_are_forgotten_after_retention_but_not_while_followed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = store(retention=60.0)
    quiet = await jobs.create(JobSpec(type="t"))
    followed = await jobs.create(JobSpec(type="t"))
    await jobs.subscribe(followed.id)
    await jobs.cancel(quiet.id)
    await jobs.cancel(followed.id)
    assert await jobs.next_deadline() == pytest.approx(trio.current_time() + 60.0)
    await expire_at(jobs, await jobs.next_deadline())
    assert await jobs.get(quiet.id) is None
    assert await jobs.get(followed.id) is not None  # its subscriber still reads it
    await jobs.unsubscribe(followed.id)
    assert await jobs.get(followed.id) is None
    assert jobs.summary(trio.current_time())["total_jobs"] == 0
    assert jobs.totals()["canceled"] == 2  # lifetime counters outlive the jobs
    assert await jobs.next_deadline() == math.inf


async def test_the_cap_forgets_the_oldest_finished_job_or_refuses() -> None:
    jobs = store(max_jobs=2)
    first = await jobs.create(JobSpec(type="t"))
    await jobs.create(JobSpec(type="t"))
    with pytest.raises(StoreFull):
        await jobs.create(JobSpec(type="t"))
    await jobs.cancel(first.id)
    await jobs.create(JobSpec(type="t"))  # room made by forgetting the finished one
    assert await jobs.get(first.id) is None
    assert jobs.summary(trio.current_time())["total_jobs"] == 2


async def test_cancel_is_idempotent_and_leaves_finished_jobs_alone() -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    canceled, changed = await jobs.cancel(job.id)
    assert (canceled.status, changed) == (Status.CANCELED, True)
    again, changed = await jobs.cancel(job.id)
    assert (again.status, changed) == (Status.CANCELED, False)
    with pytest.raises(JobNotFound):
        await jobs.cancel("nope")
    assert await jobs.claim_next(Claimer()) is None  # it left the queue


async def test_release_gives_back_only_the_same_claim() -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    first = await jobs.claim_next(Claimer())
    assert first is not None
    await jobs.release(job.id, first.job.claim)
    second = await jobs.claim_next(Claimer())
    assert second is not None
    await jobs.release(job.id, first.job.claim)  # stale: the second claim keeps it
    assert (await jobs.get(job.id)).status == Status.CLAIMED  # type: ignore[union-attr]


async def test_transfers_per_job_are_bounded() -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    claim = await jobs.claim_next(Claimer())
    assert claim is not None
    for n in range(MAX_TRANSFERS_PER_JOB):
        await jobs.offer_transfer(job.id, claim.lease_token, "payload", info(f"k{n}"))
    with pytest.raises(InvalidState):
        await jobs.offer_transfer(job.id, claim.lease_token, "result", info("one-more"))


async def test_a_subscriber_that_falls_behind_gets_the_final_state_not_a_hole() -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    subscription = await jobs.subscribe(job.id)
    assert subscription is not None
    claim = await jobs.claim_next(Claimer())
    assert claim is not None
    near = await jobs.events_after(job.id, subscription.cursor)
    assert near is not None
    assert [e.data["status"] for e in near.events] == [Status.CLAIMED]
    for percent in range(EVENT_LOG + 5):
        await jobs.set_status(job.id, claim.lease_token, Status.RUNNING, progress={"p": percent})
    await jobs.set_status(job.id, claim.lease_token, Status.COMPLETED)
    far = await jobs.events_after(job.id, subscription.cursor)
    assert far is not None
    assert far.gap
    assert [(e.name, e.data["status"]) for e in far.events] == [("status", Status.COMPLETED)]
    assert await jobs.events_after(job.id, far.cursor) == type(far)([], far.cursor)


async def test_two_waiting_claimers_get_two_jobs_created_at_once() -> None:
    """The original's single-slot notification woke one of them; versioned waits wake both."""
    jobs = store()
    claims: list[str] = []

    async def claimer() -> None:
        while True:
            seen = await jobs.queue_version()
            claim = await jobs.claim_next(Claimer())
            if claim is not None:
                claims.append(claim.job.id)
                return
            await jobs.wait_queue(seen)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(claimer)
            nursery.start_soon(claimer)
            await trio.testing.wait_all_tasks_blocked()
            first = await jobs.create(JobSpec(type="t"))
            second = await jobs.create(JobSpec(type="t"))
    assert sorted(claims) == sorted([first.id, second.id])


async def test_a_version_read_before_a_change_never_waits_for_the_next_one() -> None:
    jobs = store()
    seen = await jobs.queue_version()
    await jobs.create(JobSpec(type="t"))
    with trio.fail_after(1):
        await jobs.wait_queue(seen)
        await jobs.wait_changed(seen - 1)


async def test_summary_counts_states_and_averages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    await jobs.create(JobSpec(type="t"))
    await trio.sleep(2)
    claim = await jobs.claim_next(Claimer())
    assert claim is not None
    await trio.sleep(3)
    summary = jobs.summary(trio.current_time())
    assert summary["queued_jobs"] == 1
    assert summary["claimed_jobs"] == 1
    assert summary["oldest_queued_seconds"] == 5
    assert summary["oldest_inflight_seconds"] == 3
    await jobs.set_status(job.id, claim.lease_token, Status.COMPLETED)
    summary = jobs.summary(trio.current_time())
    assert (summary["completed_jobs"], summary["terminal_jobs"]) == (1, 1)
    assert summary["avg_queue_wait_ms"] == 2000
    assert summary["avg_service_ms"] == 3000
    assert summary["avg_end_to_end_ms"] == 5000
    assert summary["last_completed_at"].endswith("Z")
    assert [j.status for j in jobs.recent(12)] == [Status.COMPLETED, Status.QUEUED]


async def test_a_cancel_keeps_the_workers_error_and_a_requeue_clears_it() -> None:
    jobs = store()
    job = await jobs.create(JobSpec(type="t"))
    claim = await jobs.claim_next(Claimer())
    assert claim is not None
    error = {"code": "slow", "message": "retrying the backend"}
    await jobs.set_status(job.id, claim.lease_token, Status.RUNNING, error=error)
    requeued = await jobs.set_status(job.id, claim.lease_token, Status.QUEUED)
    assert requeued.error is None
    claim = await jobs.claim_next(Claimer())
    assert claim is not None
    await jobs.set_status(job.id, claim.lease_token, Status.RUNNING, error=error)
    canceled, _ = await jobs.cancel(job.id)
    assert (canceled.status, canceled.error) == (Status.CANCELED, error)
