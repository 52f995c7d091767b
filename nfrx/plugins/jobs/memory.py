"""The in-process :class:`~.store.JobStore`: every job in this server's memory, bounded.

Nothing here awaits anything but the waits, so each method runs as one step under Trio (no other
task can run in between): that is the atomicity the interface asks for. Memory is bounded by
``JOBS_MAX`` jobs (finished ones are forgotten ``JOBS_RETENTION`` after they finished, or sooner
when room is needed), :data:`EVENT_LOG` events per job and :data:`MAX_TRANSFERS_PER_JOB` channels
per job; metadata and progress are bounded by the routes' body limit.

Data structures: the queue is a list kept sorted by (-priority, creation order), so a claim scans
it in order and a queue position is a binary search; client and lease deadlines sit in one heap
whose stale entries (a lease renewed since) are skipped when they come up; finished jobs wait for
their retention in finishing order (the retention is fixed, so that is also deletion order).
"""

from __future__ import annotations

import bisect
import collections
import heapq
import hmac
import itertools
import math
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.plugins.jobs.model import (
    ALLOWED_FROM,
    HELD,
    LIVE,
    TERMINAL,
    Claim,
    InvalidState,
    Job,
    JobEvent,
    JobNotFound,
    LeaseMismatch,
    Op,
    Status,
    StoreFull,
    job_view,
)
from nfrx.plugins.jobs.store import EventBatch, StoreSettings, Subscription
from nfrx.plugins.transfer.channels import rfc3339_seconds

if TYPE_CHECKING:
    from nfrx.plugins.jobs.model import Claimer, JobSpec, TransferInfo

EVENT_LOG: Final = 64
"""Events a job keeps for subscribers that fall behind; one further behind gets a ``status``
snapshot instead, so it never misses the final state."""

MAX_TRANSFERS_PER_JOB: Final = 64
"""Payload and result channels one job may record."""

_CLIENT: Final = "client"
_LEASE: Final = "lease"

CLIENT_INACTIVE: Final = {"code": "client_inactive", "message": "client inactive"}
LEASE_EXPIRED: Final = {
    "code": "lease_expired",
    "message": "the worker holding the job stopped renewing its lease",
}


@attrs.define(eq=False)
class _Entry:
    """A job and the store's bookkeeping about it."""

    job: Job
    seq: int
    """Creation order: the job's place among equal priorities, kept when it is requeued."""
    created: float
    """``trio.current_time()`` at creation (ages and averages use this clock)."""
    claimed: float | None = None
    lease_token: str = ""
    lease_deadline: float = math.inf
    client_deadline: float = math.inf
    subscribers: int = 0
    events: collections.deque[JobEvent] = attrs.field(
        factory=lambda: collections.deque(maxlen=EVENT_LOG)
    )
    cursor: int = 0
    """Sequence number of the job's last event."""
    changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def queue_key(self) -> tuple[int, int, str]:
        return (-self.job.priority, self.seq, self.job.id)


@attrs.define
class _Totals:
    created: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    lease_expired: int = 0
    queue_wait: float = 0.0
    queue_wait_samples: int = 0
    service: float = 0.0
    service_samples: int = 0
    end_to_end: float = 0.0
    end_to_end_samples: int = 0
    last_finished: dict[str, float] = attrs.field(factory=dict)
    """Terminal state -> wall clock of the last job that reached it."""


class MemoryJobStore:
    """See the module docstring; the methods are :class:`~.store.JobStore`'s."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._jobs: dict[str, _Entry] = {}
        self._queue: list[tuple[int, int, str]] = []
        self._timers: list[tuple[float, str, str]] = []
        self._finished: collections.OrderedDict[str, float] = collections.OrderedDict()
        """Finished job id -> when it is forgotten (trio clock), in finishing order."""
        self._deferred: set[str] = set()
        """Finished jobs past their retention, kept while a subscriber follows them."""
        self._held: set[str] = set()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._counts: collections.Counter[str] = collections.Counter()
        self._totals = _Totals()
        self._seq = itertools.count(1)
        self._queue_version = 0
        self._queue_changed = trio.Event()
        self._version = 0
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing in the background

    # -- client side ---------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> Job:
        self._make_room()
        now, wall = trio.current_time(), time.time()
        job = Job(
            id=str(uuid.uuid4()),
            type=spec.type,
            status=Status.QUEUED,
            priority=spec.priority,
            metadata=spec.metadata,
            worker_id=spec.worker_id,
            worker_group=spec.worker_group,
            created_at=wall,
            updated_at=wall,
        )
        entry = _Entry(job, next(self._seq), now)
        self._jobs[job.id] = entry
        self._counts[Status.QUEUED] += 1
        self._totals.created += 1
        bisect.insort(self._queue, entry.queue_key)
        self._recent[job.id] = None
        self._start_client_ttl(entry)
        self._publish_status(entry)
        self._queue_moved()
        return self._snapshot(entry)

    async def get(self, job_id: str) -> Job | None:
        entry = self._jobs.get(job_id)
        return None if entry is None else self._snapshot(entry)

    async def touch_client(self, job_id: str) -> None:
        entry = self._jobs.get(job_id)
        if entry is not None and entry.subscribers == 0:
            self._start_client_ttl(entry)

    async def cancel(self, job_id: str, error: dict[str, str] | None = None) -> tuple[Job, bool]:
        entry = self._entry(job_id)
        if entry.job.status not in ALLOWED_FROM[Op.CANCEL]:
            return self._snapshot(entry), False
        self._set(entry, Status.CANCELED, **({} if error is None else {"error": error}))
        return self._snapshot(entry), True

    # -- worker side ---------------------------------------------------------------------------

    async def claim_next(self, claimer: Claimer) -> Claim | None:
        for _, _, job_id in self._queue:
            entry = self._jobs[job_id]
            if claimer.accepts(entry.job):
                break
        else:
            return None
        now = trio.current_time()
        entry.claimed = now
        self._totals.queue_wait += now - entry.created
        self._totals.queue_wait_samples += 1
        entry.lease_token = secrets.token_urlsafe(24)
        self._renew(entry)
        self._set(
            entry,
            Status.CLAIMED,
            claimed_worker_id=claimer.worker_id,
            claimed_worker_group=claimer.worker_group,
            claim=entry.job.claim + 1,
        )
        return Claim(
            job=self._snapshot(entry),
            lease_token=entry.lease_token,
            lease_expires_at=time.time() + self.settings.lease_seconds,
            lease_seconds=self.settings.lease_seconds,
        )

    async def release(self, job_id: str, claim: int) -> None:
        entry = self._jobs.get(job_id)
        if (
            entry is not None
            and entry.job.claim == claim
            and entry.job.status in ALLOWED_FROM[Op.RELEASE]
        ):
            self._requeue(entry)

    async def set_status(
        self,
        job_id: str,
        lease: str | None,
        status: str,
        *,
        progress: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> Job:
        entry = self._hold(job_id, lease, Op.SET_STATUS)
        if status == Status.QUEUED:
            self._requeue(entry)
        else:
            changes: dict[str, Any] = {}
            if progress is not None:
                changes["progress"] = progress
            if error is not None:
                changes["error"] = error
            self._set(entry, status, **changes)
        return self._snapshot(entry)

    async def offer_transfer(
        self, job_id: str, lease: str | None, kind: str, info: TransferInfo
    ) -> Job:
        entry = self._hold(job_id, lease, Op.OFFER_TRANSFER)
        job = entry.job
        if len(job.payloads) + len(job.results) >= MAX_TRANSFERS_PER_JOB:
            raise InvalidState(job.status, f"it has {MAX_TRANSFERS_PER_JOB} transfers already")
        self._publish(entry, kind, info.view())
        if kind == "payload":
            self._set(entry, Status.AWAITING_PAYLOAD, payloads={**job.payloads, info.key: info})
        else:
            self._set(entry, Status.AWAITING_RESULT, results={**job.results, info.key: info})
        return self._snapshot(entry)

    async def heartbeat(self, job_id: str, lease: str | None) -> tuple[Job, float]:
        entry = self._hold(job_id, lease, Op.HEARTBEAT)
        return self._snapshot(entry), time.time() + self.settings.lease_seconds

    # -- subscribers ---------------------------------------------------------------------------

    async def subscribe(self, job_id: str) -> Subscription | None:
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        entry.subscribers += 1
        entry.client_deadline = math.inf
        return Subscription(self._snapshot(entry), entry.cursor)

    async def unsubscribe(self, job_id: str) -> None:
        entry = self._jobs.get(job_id)
        if entry is None:
            return
        entry.subscribers -= 1
        if entry.subscribers == 0:
            self._start_client_ttl(entry)
            if job_id in self._deferred:  # its retention ended while it was followed
                self._forget(job_id)

    async def events_after(self, job_id: str, cursor: int) -> EventBatch | None:
        entry = self._jobs.get(job_id)
        if entry is None:
            return None
        if entry.cursor == cursor:
            return EventBatch([], cursor)
        if not entry.events or entry.events[0].seq > cursor + 1:
            snapshot = JobEvent(entry.cursor, "status", job_view(self._snapshot(entry)))
            return EventBatch([snapshot], entry.cursor, gap=True)
        return EventBatch([e for e in entry.events if e.seq > cursor], entry.cursor)

    async def wait_job(self, job_id: str, cursor: int) -> None:
        entry = self._jobs.get(job_id)
        if entry is None or entry.cursor != cursor:
            await trio.lowlevel.checkpoint()
            return
        await entry.changed.wait()

    # -- versions and waits --------------------------------------------------------------------

    async def queue_version(self) -> int:
        return self._queue_version

    async def wait_queue(self, seen: int) -> None:
        if self._queue_version != seen:
            await trio.lowlevel.checkpoint()
            return
        await self._queue_changed.wait()

    async def version(self) -> int:
        return self._version

    async def wait_changed(self, seen: int) -> None:
        if self._version != seen:
            await trio.lowlevel.checkpoint()
            return
        await self._changed.wait()

    # -- time ----------------------------------------------------------------------------------

    async def next_deadline(self) -> float:
        timer = self._timers[0][0] if self._timers else math.inf
        forget = next(iter(self._finished.values()), math.inf)
        return min(timer, forget)

    async def expire(self) -> list[Job]:
        now = trio.current_time()
        changed: list[Job] = []
        while self._timers and self._timers[0][0] <= now:
            when, kind, job_id = heapq.heappop(self._timers)
            entry = self._jobs.get(job_id)
            if entry is None:
                continue
            if kind == _CLIENT and entry.client_deadline == when:
                entry.client_deadline = math.inf
                self._set(entry, Status.CANCELED, error=CLIENT_INACTIVE)
                changed.append(self._snapshot(entry))
            elif kind == _LEASE and entry.lease_deadline == when:
                self._totals.lease_expired += 1
                if self.settings.requeue_expired:
                    self._requeue(entry)
                else:
                    self._set(entry, Status.FAILED, error=LEASE_EXPIRED)
                changed.append(self._snapshot(entry))
        if len(self._timers) > 4 * len(self._jobs) + 64:
            self._rebuild_timers()
        while self._finished:
            job_id, forget_at = next(iter(self._finished.items()))
            if forget_at > now:
                break
            self._forget(job_id)
        return changed

    # -- state and metrics ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def totals(self) -> dict[str, int]:
        t = self._totals
        return {
            "created": t.created,
            "completed": t.completed,
            "failed": t.failed,
            "canceled": t.canceled,
            "lease_expired": t.lease_expired,
        }

    def summary(self, now: float) -> dict[str, Any]:
        t, counts = self._totals, self._counts
        queued = [self._jobs[job_id].created for _, _, job_id in self._queue]
        held = [self._jobs[job_id].claimed or now for job_id in self._held]
        summary: dict[str, Any] = {
            "total_jobs": len(self._jobs),
            "queued_jobs": counts[Status.QUEUED],
            "claimed_jobs": counts[Status.CLAIMED],
            "running_jobs": counts[Status.RUNNING],
            "awaiting_transfers": counts[Status.AWAITING_PAYLOAD] + counts[Status.AWAITING_RESULT],
            "terminal_jobs": sum(counts[status] for status in TERMINAL),
            "completed_jobs": t.completed,
            "failed_jobs": t.failed,
            "canceled_jobs": t.canceled,
            "oldest_queued_seconds": int(now - min(queued)) if queued else 0,
            "oldest_inflight_seconds": int(now - min(held)) if held else 0,
            "avg_queue_wait_ms": _average_ms(t.queue_wait, t.queue_wait_samples),
            "avg_service_ms": _average_ms(t.service, t.service_samples),
            "avg_end_to_end_ms": _average_ms(t.end_to_end, t.end_to_end_samples),
        }
        for status in (Status.COMPLETED, Status.FAILED, Status.CANCELED):
            if status in t.last_finished:
                summary[f"last_{status}_at"] = rfc3339_seconds(t.last_finished[status])
        return summary

    def recent(self, limit: int) -> list[Job]:
        ids = list(itertools.islice(reversed(self._recent), limit))
        return [self._snapshot(self._jobs[job_id]) for job_id in ids]

    # -- internals -----------------------------------------------------------------------------

    def _entry(self, job_id: str) -> _Entry:
        entry = self._jobs.get(job_id)
        if entry is None:
            raise JobNotFound(job_id)
        return entry

    def _hold(self, job_id: str, lease: str | None, op: str) -> _Entry:
        """The job, checked for ``op`` by its holder; renews the lease. Raises JobNotFound,
        InvalidState (the state forbids ``op``), LeaseMismatch (not the holder)."""
        entry = self._entry(job_id)
        if entry.job.status not in ALLOWED_FROM[op]:
            raise InvalidState(entry.job.status)
        if lease is None:
            if self.settings.lease_required:
                raise LeaseMismatch("no lease token: send the claim's lease_token")
        elif not hmac.compare_digest(lease.encode(), entry.lease_token.encode()):
            raise LeaseMismatch("this lease token does not hold the job (any more)")
        self._renew(entry)
        return entry

    def _snapshot(self, entry: _Entry) -> Job:
        position = 0
        if entry.job.status == Status.QUEUED:
            position = bisect.bisect_left(self._queue, entry.queue_key) + 1
        return attrs.evolve(entry.job, queue_position=position)

    def _set(self, entry: _Entry, status: str, **changes: Any) -> None:
        """Move ``entry`` to ``status`` (with ``changes``), keep every index in step and
        publish the ``status`` event."""
        before = entry.job.status
        entry.job = attrs.evolve(entry.job, status=status, updated_at=time.time(), **changes)
        self._counts[before] -= 1
        self._counts[status] += 1
        self._recent.move_to_end(entry.job.id)
        if status in HELD:
            self._held.add(entry.job.id)
        else:
            self._held.discard(entry.job.id)
            entry.lease_token = ""
            entry.lease_deadline = math.inf
        if before == Status.QUEUED and status != Status.QUEUED:
            self._unqueue(entry)
        if status in TERMINAL and before not in TERMINAL:
            self._finish(entry, status)
        self._publish_status(entry)

    def _requeue(self, entry: _Entry) -> None:
        bisect.insort(self._queue, entry.queue_key)
        entry.claimed = None
        self._set(
            entry,
            Status.QUEUED,
            claimed_worker_id="",
            claimed_worker_group="",
            progress=None,
            error=None,
            payloads={},
            results={},
        )
        self._start_client_ttl(entry)
        self._queue_moved()

    def _unqueue(self, entry: _Entry) -> None:
        key = entry.queue_key
        index = bisect.bisect_left(self._queue, key)
        if index < len(self._queue) and self._queue[index] == key:
            del self._queue[index]

    def _finish(self, entry: _Entry, status: str) -> None:
        now, t = trio.current_time(), self._totals
        setattr(t, status, getattr(t, status) + 1)
        t.last_finished[status] = time.time()
        t.end_to_end += now - entry.created
        t.end_to_end_samples += 1
        if entry.claimed is not None:
            t.service += now - entry.claimed
            t.service_samples += 1
        elif status == Status.CANCELED:  # never claimed: its whole life was a wait
            t.queue_wait += now - entry.created
            t.queue_wait_samples += 1
        entry.client_deadline = math.inf
        self._finished[entry.job.id] = now + self.settings.retention

    def _forget(self, job_id: str) -> None:
        """Drop a finished job -- unless a subscriber still follows it (its stream would end
        without its last events): it is then forgotten when the last one leaves."""
        self._finished.pop(job_id, None)
        entry = self._jobs[job_id]
        if entry.subscribers:
            self._deferred.add(job_id)
            return
        self._deferred.discard(job_id)
        del self._jobs[job_id]
        self._recent.pop(job_id, None)
        self._counts[entry.job.status] -= 1
        entry.changed.set()  # waiters see the job gone
        self._bump()

    def _make_room(self) -> None:
        """Forget the oldest finished job nobody follows if ``JOBS_MAX`` are held; raise
        StoreFull if there is none."""
        if len(self._jobs) < self.settings.max_jobs:
            return
        for job_id in self._finished:
            if not self._jobs[job_id].subscribers:
                self._forget(job_id)
                return
        raise StoreFull(f"{self.settings.max_jobs} jobs are held and none is finished")

    def _start_client_ttl(self, entry: _Entry) -> None:
        ttl = self.settings.client_ttl
        if ttl > 0 and entry.job.status in LIVE and entry.subscribers == 0:
            entry.client_deadline = trio.current_time() + ttl
            heapq.heappush(self._timers, (entry.client_deadline, _CLIENT, entry.job.id))

    def _renew(self, entry: _Entry) -> None:
        entry.lease_deadline = trio.current_time() + self.settings.lease_seconds
        heapq.heappush(self._timers, (entry.lease_deadline, _LEASE, entry.job.id))

    def _rebuild_timers(self) -> None:
        """Drop the stale heap entries (deadlines moved since they were pushed)."""
        timers = []
        for job_id, entry in self._jobs.items():
            if entry.client_deadline < math.inf:
                timers.append((entry.client_deadline, _CLIENT, job_id))
            if entry.lease_deadline < math.inf:
                timers.append((entry.lease_deadline, _LEASE, job_id))
        heapq.heapify(timers)
        self._timers = timers

    def _publish(self, entry: _Entry, name: str, data: dict[str, Any]) -> None:
        entry.cursor += 1
        entry.events.append(JobEvent(entry.cursor, name, data))
        entry.changed.set()
        entry.changed = trio.Event()
        self._bump()

    def _publish_status(self, entry: _Entry) -> None:
        self._publish(entry, "status", job_view(self._snapshot(entry)))

    def _bump(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = trio.Event()

    def _queue_moved(self) -> None:
        self._queue_version += 1
        self._queue_changed.set()
        self._queue_changed = trio.Event()


def _average_ms(total: float, samples: int) -> int:
    return int(total * 1000 / samples) if samples else 0
