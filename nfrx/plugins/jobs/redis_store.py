"""The shared :class:`~.store.JobStore` (``REDIS_URL``): jobs, claims and leases in Redis, so a
client of one instance and a worker of another work on the same jobs.

Schema and the one write script: :mod:`.redis_schema`. Each step reads the job's record with
Redis' clock in one round trip, decides the change with the in-process store's rules, and
commits it with a compare-and-set script (a second round trip); if another instance changed the
job in between, the step reads again (at most :data:`ATTEMPTS` times). A claim walks the queue in
order reading only each job's filter fields, then commits the first match the same way: of two
claimers of one job, one wins and the other goes on to the next job.

**Waits without lost wake-ups.** Every commit publishes a message on ``{nfrx}:jobs`` from inside
the script (atomically with the change). :meth:`RedisJobStore.run` keeps one subscription per
instance and moves local counters on each message: :meth:`~RedisJobStore.version` (any change),
:meth:`~RedisJobStore.queue_version` (a job became claimable) and each waited job's event. A
waiter reads the counter (or, for a job, its cursor in Redis) *before* trying, so a change
committed after its try arrives as a message after it too and wakes it. When the subscription
breaks, messages may be lost: every waiter is woken when it is back (it reads again), and while
it is down a wait also returns after :data:`POLL_SECONDS`, so callers read again.

**Deadlines** live in Redis (client TTL and lease in one ZSET, retention in another, on Redis'
clock); :meth:`~RedisJobStore.next_deadline` translates the first to this instance's clock. Every
instance's jobs service applies them when due; each change is a compare-and-set, so exactly one
instance applies each (the others find the record moved and nothing due).

**State and metrics** (synchronous readers): a copy of the counters, the oldest queued and held
times and the recent jobs, refreshed by :meth:`~RedisJobStore.expire` (the service calls it after
every change) -- so they show the whole gateway, a change late.

**Subscribers** are counted in the record. An instance that dies with a subscriber leaves it
counted: that job's client TTL then never runs (its worker or lease still ends it) and a finished
one is forgotten :data:`~.store.StoreSettings.retention` later than it would have been, not never.

**Redis unreachable**: every step raises :class:`~.model.StoreUnavailable` within
:data:`~nfrx.cluster.store.TIMEOUT` (the routes answer 503 ``jobs_unavailable``, an event or
claim stream ends), the jobs service retries its deadlines every :data:`POLL_SECONDS`; nothing
hangs. Nothing is lost that Redis kept.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import json
import logging
import math
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import trio

from nfrx.cluster.store import TIMEOUT, ClusterUnavailable, translated
from nfrx.plugins.jobs.memory import (
    CLIENT_INACTIVE,
    EVENT_LOG,
    LEASE_EXPIRED,
    MAX_TRANSFERS_PER_JOB,
)
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
    StoreUnavailable,
    job_view,
)
from nfrx.plugins.jobs.redis_schema import (
    CHANNEL,
    CLIENT_PREFIX,
    COMMIT,
    DEADLINES,
    FINISHED,
    LEASE_PREFIX,
    QUEUE,
    SEQ,
    Draft,
    Record,
    event_of,
    events_key,
    job_key,
    keys,
    unavailable,
)
from nfrx.plugins.jobs.redis_state import StateCopy
from nfrx.plugins.jobs.store import EventBatch, Subscription

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.plugins.jobs.model import Claimer, JobSpec, TransferInfo
    from nfrx.plugins.jobs.store import StoreSettings

log = logging.getLogger("nfrx.jobs")

T = TypeVar("T")

ATTEMPTS: Final = 32
"""Reads of one step before it gives up (other instances kept changing the job meanwhile)."""
CLAIM_BATCH: Final = 128
"""Queued jobs a claim reads the filters of per round trip."""
DUE_BATCH: Final = 256
"""Deadlines one :meth:`RedisJobStore.expire` applies (the rest at the next)."""
POLL_SECONDS: Final = 1.0
"""While the subscription is down, waits return after this long; the service's deadline loop
retries this often while Redis is unreachable."""
MAX_LEFT: Final = 1024
"""Jobs other instances took from their workers, remembered until the next expiry."""
MAX_MAKE_ROOM: Final = 16
"""Finished jobs a create looks at to make room under ``JOBS_MAX``."""


class RedisJobStore:
    """See the module docstring; the methods are :class:`~.store.JobStore`'s. ``client`` waits
    for the instance's coredis client (the cluster's, made when it starts)."""

    def __init__(
        self,
        settings: StoreSettings,
        client: Callable[[], Awaitable[Any]],
        instance_id: str,
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id
        self._get_client = client
        self._client: Any = None
        self._commit: Any = None
        self._subscribed = False
        self.following = trio.Event()
        """Set once the change messages are followed (the first subscription)."""
        self._version = 0
        self._changed = trio.Event()
        self._queue_version = 0
        self._queue_changed = trio.Event()
        self._job_waits: dict[str, trio.Event] = {}
        self._left: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._offset = 0.0
        """Redis' clock minus ``trio.current_time()``, as last read."""
        self._state = StateCopy()

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the change messages until cancelled (owned by the jobs service's task)."""
        task_status.started()
        client = await self._redis(wait=math.inf)
        while True:
            try:
                with translated("jobs messages", math.inf):
                    async with client.pubsub(
                        channels=[CHANNEL], ignore_subscribe_messages=True, retry_policy=None
                    ) as pubsub:
                        self._subscribed = True
                        self.following.set()
                        self._wake_all()  # what happened before is read again by everyone
                        async for message in pubsub:
                            self._on_message(message)
            except ClusterUnavailable as exc:
                log.debug("jobs messages interrupted: %s", exc)
            finally:
                self._subscribed = False
                self._wake_all()
            await trio.sleep(POLL_SECONDS)

    async def _redis(self, wait: float = 0.0) -> Any:
        if self._client is None:
            with trio.move_on_after(max(wait, TIMEOUT)):
                client = await self._get_client()
                self._commit = client.register_script(COMMIT)
                self._client = client
            if self._client is None:
                raise StoreUnavailable("the shared job store (REDIS_URL) is not connected yet")
        return self._client

    def _on_message(self, message: dict[str, Any]) -> None:
        try:
            news = json.loads(message.get("data") or "")
        except (ValueError, TypeError):
            return
        if not isinstance(news, dict):
            return
        self._bump()
        if news.get("q"):
            self._queue_bump()
        job_id = news.get("j")
        if isinstance(job_id, str):
            event = self._job_waits.pop(job_id, None)
            if event is not None:
                event.set()
            if news.get("x") and news.get("i") != self.instance_id:
                self._left[job_id] = None
                while len(self._left) > MAX_LEFT:
                    self._left.popitem(last=False)

    def _wake_all(self) -> None:
        self._bump()
        self._queue_bump()
        waits, self._job_waits = self._job_waits, {}
        for event in waits.values():
            event.set()

    def _bump(self) -> None:
        self._version += 1
        self._changed.set()
        self._changed = trio.Event()

    def _queue_bump(self) -> None:
        self._queue_version += 1
        self._queue_changed.set()
        self._queue_changed = trio.Event()

    async def _wait(self, event: trio.Event) -> None:
        if self._subscribed:
            await event.wait()
        else:
            with trio.move_on_after(POLL_SECONDS):
                await event.wait()

    # -- reading and committing ----------------------------------------------------------------

    def _clock(self, now: Any) -> float:
        redis_now: float = now.timestamp()
        self._offset = redis_now - trio.current_time()
        return redis_now

    async def _read(self, job_id: str) -> tuple[str, Record | None, float]:
        """The job's rev, record (None: no such job) and Redis' clock, in one round trip."""
        client = await self._redis()
        with unavailable("job read"):
            async with client.pipeline(transaction=False) as pipe:
                now = pipe.time()
                fields = pipe.hmget(job_key(job_id), ["rev", "data"])
            rev, data = await fields
            return rev or "", None if data is None else Record.loads(data), self._clock(await now)

    async def _apply(self, draft: Draft) -> int:
        """Commit ``draft``: 1 applied, 0 the record moved meanwhile, -1 past ``JOBS_MAX``."""
        await self._redis()
        with unavailable("job write"):
            args = draft.commit_args(self.instance_id, EVENT_LOG)
            result: int = await self._commit(keys=keys(draft.entry.job.id), args=args)
        return int(result)

    async def _step(self, job_id: str, step: Callable[[Draft], T]) -> T:
        """Run ``step`` on the job's record until its change commits (see the module
        docstring). Raises JobNotFound, and what ``step`` raises."""
        for _ in range(ATTEMPTS):
            rev, record, now = await self._read(job_id)
            if record is None:
                raise JobNotFound(job_id)
            draft = Draft(rev, record, now, self.settings)
            result = step(draft)
            if not draft.changed or await self._apply(draft) == 1:
                return result
        raise StoreUnavailable(f"job {job_id} kept changing under {ATTEMPTS} attempts")

    async def _position(self, job: Job) -> Job:
        if job.status != Status.QUEUED:
            return job
        client = await self._redis()
        _rev, record, _ = await self._read(job.id)
        if record is None or record.job.status != Status.QUEUED:
            return job
        with unavailable("queue position"):
            rank = await client.zrank(QUEUE, record.queue_member)
        return job if rank is None else _with_position(record.job, int(rank) + 1)

    # -- client side ---------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> Job:
        client = await self._redis()
        for _ in range(ATTEMPTS):
            with unavailable("job sequence"):
                async with client.pipeline(transaction=False) as pipe:
                    now_reply = pipe.time()
                    seq_reply = pipe.incr(SEQ)
                now, seq = self._clock(await now_reply), int(await seq_reply)
            wall = time.time()
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
            draft = Draft("", Record(job=job, seq=seq, created=now), now, self.settings)
            draft.changed = draft.touched = draft.queue_moved = True
            draft.cap = self.settings.max_jobs
            draft.count("jobs")
            draft.count(f"n:{Status.QUEUED}")
            draft.count("created")
            draft.start_client_ttl()
            draft.publish_status()
            result = await self._apply(draft)
            if result == 1:
                return job
            if result == -1 and not await self._make_room():
                raise StoreFull(f"{self.settings.max_jobs} jobs are held and none is finished")
        raise StoreUnavailable(f"no room made for a new job under {ATTEMPTS} attempts")

    async def _make_room(self) -> bool:
        """Forget the oldest finished job nobody follows; False if there is none."""
        client = await self._redis()
        with unavailable("finished jobs"):
            oldest = await client.zrange(FINISHED, 0, MAX_MAKE_ROOM - 1)
        for job_id in oldest:

            def forget(draft: Draft) -> bool:
                if draft.entry.subscribers or draft.entry.job.status not in TERMINAL:
                    return False
                draft.delete()
                return True

            try:
                if await self._step(str(job_id), forget):
                    return True
            except JobNotFound:
                return True  # forgotten meanwhile: room was made
        return False

    async def get(self, job_id: str) -> Job | None:
        _, record, _ = await self._read(job_id)
        return None if record is None else await self._position(record.job)

    async def touch_client(self, job_id: str) -> None:
        def touch(draft: Draft) -> None:
            if draft.entry.subscribers == 0:
                draft.start_client_ttl()
                draft.announce = False  # later, never earlier: nobody need wake for it

        with contextlib.suppress(JobNotFound):
            await self._step(job_id, touch)

    async def cancel(self, job_id: str, error: dict[str, str] | None = None) -> tuple[Job, bool]:
        def cancel(draft: Draft) -> tuple[Job, bool]:
            if draft.entry.job.status not in ALLOWED_FROM[Op.CANCEL]:
                return draft.snapshot(), False
            draft.set(Status.CANCELED, **({} if error is None else {"error": error}))
            return draft.snapshot(), True

        job, changed = await self._step(job_id, cancel)
        return (job if changed else await self._position(job)), changed

    # -- worker side ---------------------------------------------------------------------------

    async def claim_next(self, claimer: Claimer) -> Claim | None:
        for _ in range(ATTEMPTS):
            job_id = await self._first_match(claimer)
            if job_id is None:
                return None
            try:
                claim = await self._step(job_id, lambda draft: self._claim(draft, claimer))
            except JobNotFound:
                continue
            if claim is not None:
                return claim
        raise StoreUnavailable(f"every queued job was taken under {ATTEMPTS} attempts")

    async def _first_match(self, claimer: Claimer) -> str | None:
        """The id of the first queued job ``claimer`` accepts (by its filter fields)."""
        client = await self._redis()
        start = 0
        while True:
            with unavailable("queue read"):
                members = await client.zrange(QUEUE, start, start + CLAIM_BATCH - 1)
                if not members:
                    return None
                ids = [str(member).split(":", 1)[1] for member in members]
                async with client.pipeline(transaction=False) as pipe:
                    replies = [pipe.hget(job_key(job_id), "aff") for job_id in ids]
                filters = [await reply for reply in replies]
            for job_id, text in zip(ids, filters, strict=True):
                if text is None:
                    continue
                job_type, worker_id, worker_group = json.loads(text)
                probe = Job(
                    id=job_id,
                    type=job_type,
                    status=Status.QUEUED,
                    worker_id=worker_id,
                    worker_group=worker_group,
                    created_at=0,
                    updated_at=0,
                )
                if claimer.accepts(probe):
                    return job_id
            if len(members) < CLAIM_BATCH:
                return None
            start += CLAIM_BATCH

    def _claim(self, draft: Draft, claimer: Claimer) -> Claim | None:
        entry = draft.entry
        if entry.job.status != Status.QUEUED or not claimer.accepts(entry.job):
            return None  # claimed (or changed) since the queue was read
        entry.claimed = draft.now
        draft.count("queue_wait", draft.now - entry.created)
        draft.count("queue_wait_samples")
        entry.lease_token = secrets.token_urlsafe(24)
        draft.renew()
        draft.set(
            Status.CLAIMED,
            claimed_worker_id=claimer.worker_id,
            claimed_worker_group=claimer.worker_group,
            claim=entry.job.claim + 1,
        )
        return Claim(
            job=draft.snapshot(),
            lease_token=entry.lease_token,
            lease_expires_at=time.time() + self.settings.lease_seconds,
            lease_seconds=self.settings.lease_seconds,
        )

    async def release(self, job_id: str, claim: int) -> None:
        def release(draft: Draft) -> None:
            job = draft.entry.job
            if job.claim == claim and job.status in ALLOWED_FROM[Op.RELEASE]:
                draft.requeue()

        with contextlib.suppress(JobNotFound):
            await self._step(job_id, release)

    def _hold(self, draft: Draft, lease: str | None, op: str) -> None:
        """The memory store's check of the holder, on ``draft``; renews the lease."""
        entry = draft.entry
        if entry.job.status not in ALLOWED_FROM[op]:
            raise InvalidState(entry.job.status)
        if lease is None:
            if self.settings.lease_required:
                raise LeaseMismatch("no lease token: send the claim's lease_token")
        elif not hmac.compare_digest(lease.encode(), entry.lease_token.encode()):
            raise LeaseMismatch("this lease token does not hold the job (any more)")
        draft.renew()

    async def set_status(
        self,
        job_id: str,
        lease: str | None,
        status: str,
        *,
        progress: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> Job:
        def update(draft: Draft) -> Job:
            self._hold(draft, lease, Op.SET_STATUS)
            if status == Status.QUEUED:
                draft.requeue()
            else:
                changes: dict[str, Any] = {}
                if progress is not None:
                    changes["progress"] = progress
                if error is not None:
                    changes["error"] = error
                draft.set(status, **changes)
            return draft.snapshot()

        return await self._step(job_id, update)

    async def offer_transfer(
        self, job_id: str, lease: str | None, kind: str, info: TransferInfo
    ) -> Job:
        def offer(draft: Draft) -> Job:
            self._hold(draft, lease, Op.OFFER_TRANSFER)
            job = draft.entry.job
            if len(job.payloads) + len(job.results) >= MAX_TRANSFERS_PER_JOB:
                raise InvalidState(job.status, f"it has {MAX_TRANSFERS_PER_JOB} transfers already")
            draft.publish(kind, info.view())
            if kind == "payload":
                draft.set(Status.AWAITING_PAYLOAD, payloads={**job.payloads, info.key: info})
            else:
                draft.set(Status.AWAITING_RESULT, results={**job.results, info.key: info})
            return draft.snapshot()

        return await self._step(job_id, offer)

    async def heartbeat(self, job_id: str, lease: str | None) -> tuple[Job, float]:
        def beat(draft: Draft) -> Job:
            self._hold(draft, lease, Op.HEARTBEAT)
            draft.announce = False  # a lease moved later: nobody need wake for it
            return draft.snapshot()

        job = await self._step(job_id, beat)
        return job, time.time() + self.settings.lease_seconds

    # -- subscribers ---------------------------------------------------------------------------

    async def subscribe(self, job_id: str) -> Subscription | None:
        def subscribe(draft: Draft) -> Subscription:
            entry = draft.entry
            entry.subscribers += 1
            entry.client_deadline = math.inf
            draft.changed = True
            draft.announce = False
            return Subscription(draft.snapshot(), entry.cursor)

        try:
            subscription = await self._step(job_id, subscribe)
        except JobNotFound:
            return None
        return Subscription(await self._position(subscription.job), subscription.cursor)

    async def unsubscribe(self, job_id: str) -> None:
        def unsubscribe(draft: Draft) -> None:
            entry = draft.entry
            entry.subscribers = max(0, entry.subscribers - 1)
            draft.changed = True
            if entry.subscribers == 0:
                draft.start_client_ttl()  # an earlier deadline: the message wakes the services
                if entry.job.status in TERMINAL and entry.forget_at <= draft.now:
                    draft.delete()  # its retention ended while it was followed

        with contextlib.suppress(JobNotFound):
            await self._step(job_id, unsubscribe)

    async def events_after(self, job_id: str, cursor: int) -> EventBatch | None:
        client = await self._redis()
        with unavailable("job events"):
            async with client.pipeline(transaction=False) as pipe:
                data_reply = pipe.hget(job_key(job_id), "data")
                events_reply = pipe.lrange(events_key(job_id), 0, -1)
            data, texts = await data_reply, await events_reply
        if data is None:
            return None
        record = Record.loads(data)
        if record.cursor == cursor:
            return EventBatch([], cursor)
        events: list[JobEvent] = [event_of(text) for text in texts]
        if not events or events[0].seq > cursor + 1:
            job = await self._position(record.job)
            return EventBatch([_status_event(record.cursor, job)], record.cursor, gap=True)
        return EventBatch([e for e in events if e.seq > cursor], record.cursor)

    async def wait_job(self, job_id: str, cursor: int) -> None:
        event = self._job_waits.setdefault(job_id, trio.Event())
        client = await self._redis()
        with unavailable("job read"):
            data = await client.hget(job_key(job_id), "data")
        if data is None or Record.loads(data).cursor != cursor:
            return
        await self._wait(event)

    # -- versions and waits --------------------------------------------------------------------

    async def queue_version(self) -> int:
        return self._queue_version

    async def wait_queue(self, seen: int) -> None:
        if self._queue_version != seen:
            await trio.lowlevel.checkpoint()
            return
        await self._wait(self._queue_changed)

    async def version(self) -> int:
        return self._version

    async def wait_changed(self, seen: int) -> None:
        if self._version != seen:
            await trio.lowlevel.checkpoint()
            return
        await self._wait(self._changed)

    # -- time ----------------------------------------------------------------------------------

    async def next_deadline(self) -> float:
        client = await self._redis()
        with unavailable("job deadlines"):
            async with client.pipeline(transaction=False) as pipe:
                now_reply = pipe.time()
                first = [pipe.zrange(key, 0, 0, withscores=True) for key in (DEADLINES, FINISHED)]
            now = self._clock(await now_reply)
            scores = [float(entry[1]) for reply in first for entry in await reply]
        if not scores:
            return math.inf
        return trio.current_time() + (min(scores) - now)

    async def expire(self) -> list[Job]:
        client = await self._redis()
        with unavailable("job deadlines"):
            now = self._clock(await client.time())
            async with client.pipeline(transaction=False) as pipe:
                due = [
                    pipe.zrangebyscore(key, "-inf", now, offset=0, count=DUE_BATCH)
                    for key in (DEADLINES, FINISHED)
                ]
            deadlines, finished = [[str(m) for m in await reply] for reply in due]
        changed: list[Job] = []
        for member in deadlines:
            job = await self._apply_deadline(member)
            if job is not None:
                changed.append(job)
        for job_id in finished:
            await self._forget(job_id)
        left, self._left = list(self._left), collections.OrderedDict()
        for job_id in left:
            _, record, _ = await self._read(job_id)
            if record is not None:
                changed.append(record.job)
        await self._refresh()
        return changed

    async def _apply_deadline(self, member: str) -> Job | None:
        """Apply the deadline ``member`` (``c:<id>`` or ``l:<id>``) if it is (still) due."""
        client = member.startswith(CLIENT_PREFIX)
        job_id = member.removeprefix(CLIENT_PREFIX).removeprefix(LEASE_PREFIX)

        def due(draft: Draft) -> Job | None:
            entry, now = draft.entry, draft.now
            if client:
                if entry.client_deadline > now or entry.job.status not in LIVE:
                    return None
                entry.client_deadline = math.inf
                draft.set(Status.CANCELED, error=CLIENT_INACTIVE)
                return draft.snapshot()
            if entry.lease_deadline > now or entry.job.status not in HELD:
                return None
            draft.count("lease_expired")
            if self.settings.requeue_expired:
                draft.requeue()
            else:
                draft.set(Status.FAILED, error=LEASE_EXPIRED)
                draft.left_worker = True
            return draft.snapshot()

        try:
            return await self._step(job_id, due)
        except JobNotFound:
            return None

    async def _forget(self, job_id: str) -> None:
        def forget(draft: Draft) -> None:
            entry = draft.entry
            if entry.job.status not in TERMINAL or entry.forget_at > draft.now:
                return
            if entry.subscribers:  # followed: forgotten when the last one leaves, or later
                entry.subscribers = 0
                entry.forget_at = draft.now + self.settings.retention
                draft.changed = True
                draft.announce = False
                return
            draft.delete()

        with contextlib.suppress(JobNotFound):
            await self._step(job_id, forget)

    # -- state and metrics ---------------------------------------------------------------------

    async def _refresh(self) -> None:
        client = await self._redis()
        with unavailable("jobs state"):
            await self._state.refresh(client)
        self._offset = self._state.offset

    def counts(self) -> dict[str, int]:
        return self._state.counts()

    def totals(self) -> dict[str, int]:
        return self._state.totals()

    def summary(self, now: float) -> dict[str, Any]:
        return self._state.summary(now)

    def recent(self, limit: int) -> list[Job]:
        return self._state.recent(limit)


def _with_position(job: Job, position: int) -> Job:
    return attrs.evolve(job, queue_position=position)


def _status_event(cursor: int, job: Job) -> JobEvent:
    return JobEvent(cursor, "status", job_view(job))
