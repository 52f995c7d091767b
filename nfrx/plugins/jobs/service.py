"""The jobs API's engine for one server: a :class:`~.store.JobStore`, its deadlines, the event
streams, and the plugin's contributions to state and metrics.

One :class:`JobsService` per gateway, owned by its jobs plugin (:mod:`.plugin`). Its
:meth:`~JobsService.run` is the plugin's one background task, owned by the server's root nursery:
it applies the store's deadlines (client TTL, leases, retention) when they pass and tells the
state streams about changes. Routes call the other methods; nothing here holds a lock or a buffer
that grows.

Event streams are async generators the routes return as response bodies. Each wait sits in a
cancel scope of its own, never around a ``yield``; cleanup (a subscriber leaving, an undelivered
claim going back to the queue) runs in ``finally`` with a short shielded bound, so a client that
leaves -- quart-trio cancels the body or closes the generator -- leaves nothing behind.

What jobs do to transfers: a job that is canceled, times out, loses its worker or is given back
closes the channels offered on it (their sides get 410 ``transfer_closed``, a reader mid-body is
cut); a job that completes or fails leaves them alone, so a result still being read finishes.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any, Final

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nfrx.plugins.jobs.activity import ClaimMode, WorkerActivity
from nfrx.plugins.jobs.memory import LEASE_EXPIRED
from nfrx.plugins.jobs.model import (
    HELD,
    STATUSES,
    TERMINAL,
    JobNotFound,
    Status,
    StoreUnavailable,
    TransferInfo,
    job_view,
)
from nfrx.plugins.transfer.channels import Outcome

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nfrx.plugins.jobs.model import Claim, Claimer, Job, JobSpec
    from nfrx.plugins.jobs.store import JobStore
    from nfrx.plugins.transfer.channels import TransferChannels
    from nfrx.plugins.transfer.homes import TransferHomes

KEEPALIVE_INTERVAL: Final = 15.0
"""Seconds of silence after which an event stream sends a comment (keeps proxies from timing
it out)."""

KEEPALIVE: Final = b": keep-alive\n\n"

CLEANUP_TIMEOUT: Final = 1.0
"""Seconds a stream's cleanup may spend on the store."""

STATE_JOBS: Final = 12
"""Jobs listed in the state (the most recently updated), as the original."""

TRANSFER_URL: Final = "/api/transfer/"

UNAVAILABLE_RETRY: Final = 1.0
"""Seconds between two attempts at the deadlines while the store cannot be reached."""

log = logging.getLogger("nfrx.jobs")


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(data).encode() + b"\n\n"


class JobsService:
    """See the module docstring."""

    def __init__(
        self,
        store: JobStore,
        channels: TransferChannels,
        *,
        sse_close_delay: float = 5.0,
        on_change: Callable[[], None] | None = None,
        homes: TransferHomes | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        self.homes = homes
        """Where channels live when several instances share them (None: alone)."""
        self.sse_close_delay = sse_close_delay
        """After a job's final event its stream ends this much later (0: at once; <0: never)."""
        self.on_change = on_change
        self.activity = WorkerActivity()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply the store's deadlines as they pass, and report changes, until cancelled (a
        shared store's own task runs beside). A store that cannot be reached is retried."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            task_status.started()
            while True:
                try:
                    await self._expire()
                except StoreUnavailable as exc:
                    log.warning("jobs: deadlines not applied: %s", exc)
                    await trio.sleep(UNAVAILABLE_RETRY)

    async def _expire(self) -> None:
        seen = await self.store.version()
        with trio.move_on_at(await self.store.next_deadline()):
            await self.store.wait_changed(seen)
        for job in await self.store.expire():
            reason = "the client went away" if job.status == Status.CANCELED else "lease lost"
            self.channels.close_job(job.id, reason)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- client side ---------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> Job:
        """Queue a job. Raises StoreFull."""
        return await self.store.create(spec)

    async def get(self, job_id: str) -> Job:
        """The job now; a poll counts as its client being there. Raises JobNotFound."""
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        await self.store.touch_client(job_id)
        return job

    async def cancel(self, job_id: str) -> Job:
        """Cancel the job (a finished one is answered as it is). Raises JobNotFound."""
        job, changed = await self.store.cancel(job_id)
        if changed:
            self.channels.close_job(job_id, "the job was canceled")
        return job

    async def events(self, job_id: str) -> AsyncIterator[bytes]:
        """The job's event stream: its ``status`` now (and a ``payload``/``result`` event per
        channel already offered, so a late subscriber misses none), then every event as it
        happens, a keep-alive comment after silence, and the end ``sse_close_delay`` after the
        final status. Ends at once if the job is gone. The subscription keeps the client TTL
        from running."""
        try:
            subscription = await self.store.subscribe(job_id)
        except StoreUnavailable as exc:
            log.warning("jobs: no event stream for job %s: %s", job_id, exc)
            return
        if subscription is None:
            return
        try:
            job = subscription.job
            yield sse("status", job_view(job))
            for kind, offered in (("payload", job.payloads), ("result", job.results)):
                for info in offered.values():
                    yield sse(kind, info.view())
            cursor = subscription.cursor
            close_at = self._close_at() if job.status in TERMINAL else math.inf
            last_write = trio.current_time()
            while trio.current_time() < close_at:
                with trio.move_on_at(min(close_at, last_write + KEEPALIVE_INTERVAL)):
                    await self.store.wait_job(job_id, cursor)
                now = trio.current_time()
                if now >= close_at:
                    return
                batch = await self.store.events_after(job_id, cursor)
                if batch is None:
                    return  # forgotten (only once nobody follows it, so only on a race)
                if not batch.events:
                    if now >= last_write + KEEPALIVE_INTERVAL:
                        yield KEEPALIVE
                        last_write = now
                    continue
                cursor = batch.cursor
                for event in batch.events:
                    yield sse(event.name, event.data)
                    if event.name == "status" and event.data["status"] in TERMINAL:
                        close_at = min(close_at, self._close_at())
                last_write = trio.current_time()
        except StoreUnavailable as exc:
            log.warning("jobs: the event stream of job %s ended: %s", job_id, exc)
        finally:
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await self._quietly(self.store.unsubscribe(job_id))

    @staticmethod
    async def _quietly(cleanup: Awaitable[None]) -> None:
        """A stream's cleanup on the store; a store that cannot be reached is only logged."""
        try:
            await cleanup
        except StoreUnavailable as exc:
            log.warning("jobs: a stream's cleanup was not recorded: %s", exc)

    def _close_at(self) -> float:
        delay = self.sse_close_delay
        return math.inf if delay < 0 else trio.current_time() + delay

    # -- worker side ---------------------------------------------------------------------------

    async def claim(self, claimer: Claimer, max_wait: float) -> Claim | None:
        """The first job ``claimer`` accepts, waiting up to ``max_wait`` seconds for one; None
        if none came."""
        self.activity.seen(claimer, ClaimMode.POLL)
        self._changed()  # the state lists the worker now
        deadline = trio.current_time() + max_wait
        while True:
            seen = await self.store.queue_version()  # before trying: no lost wake-up
            claim = await self.store.claim_next(claimer)
            if claim is not None:
                self.activity.seen(claimer, ClaimMode.POLL, claim.job.id)
                return claim
            if trio.current_time() >= deadline:
                return None
            with trio.move_on_at(deadline):
                await self.store.wait_queue(seen)

    async def claim_stream(self, claimer: Claimer, max_active: int = 0) -> AsyncIterator[bytes]:
        """Claim jobs for ``claimer`` as they come, each sent as ``event: job`` (the claim
        object) -- at most ``max_active`` unfinished ones at a time when it is above 0. A job
        handed out here that is then canceled, or lost to its lease, is announced as ``event:
        cancel``. A claim whose event could not be sent (the worker left) goes back to the
        queue."""
        mine: dict[str, int] = {}
        """Jobs this stream handed out and still holds: id -> claim number."""
        self.activity.stream_opened(claimer)
        self._changed()
        try:
            last_write = trio.current_time()
            while True:
                queue_seen = await self.store.queue_version()
                seen = await self.store.version()
                for revoked in await self._revoked(mine):
                    yield revoked
                    last_write = trio.current_time()
                if not max_active or len(mine) < max_active:
                    claim = await self.store.claim_next(claimer)
                    if claim is not None:
                        mine[claim.job.id] = claim.job.claim
                        self.activity.seen(claimer, ClaimMode.STREAM, claim.job.id)
                        delivered = False
                        try:
                            yield sse("job", claim.view())
                            delivered = True
                        finally:
                            if not delivered:
                                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                                    release = self.store.release(claim.job.id, claim.job.claim)
                                    await self._quietly(release)
                        last_write = trio.current_time()
                        continue
                with trio.move_on_at(last_write + KEEPALIVE_INTERVAL) as scope:
                    if mine:  # any change may concern one of its jobs
                        await self.store.wait_changed(seen)
                    else:
                        await self.store.wait_queue(queue_seen)
                if scope.cancelled_caught:
                    yield KEEPALIVE
                    last_write = trio.current_time()
                    self.activity.seen(claimer, ClaimMode.STREAM)
        except StoreUnavailable as exc:
            log.warning("jobs: a claim stream ended: %s", exc)
        finally:
            self.activity.stream_closed(claimer)
            self._changed()

    async def _revoked(self, mine: dict[str, int]) -> list[bytes]:
        """``cancel`` events for the jobs of ``mine`` that left their worker other than by its
        own hand (canceled, back in the queue, claimed again, lease expired); finished ones
        leave ``mine``."""
        events = []
        for job_id, claim in list(mine.items()):
            job = await self.store.get(job_id)
            if job is not None and job.claim == claim and job.status in HELD:
                continue
            del mine[job_id]
            if job is None:
                continue
            finished = job.status in (Status.COMPLETED, Status.FAILED) and job.claim == claim
            if finished and job.error != LEASE_EXPIRED:
                continue
            data: dict[str, Any] = {"job_id": job_id, "status": job.status}
            if job.error:
                data["error"] = job.error
            events.append(sse("cancel", data))
        return events

    async def offer_transfer(
        self,
        job_id: str,
        lease: str | None,
        kind: str,
        key: str,
        properties: dict[str, Any] | None,
    ) -> TransferInfo:
        """Open a ``payload`` or ``result`` (``kind``) channel on the job for its worker.
        Raises JobError, TransferError."""
        # Checked (and the lease renewed) before a channel exists, so that a refused request
        # leaves none behind; offer_transfer checks again, atomically.
        await self.store.heartbeat(job_id, lease)
        channel = self.channels.create(job_id)
        if self.homes is not None:
            await self.homes.register(channel, self.channels.ttl)
        info = TransferInfo(
            key=key,
            channel_id=channel.id,
            method="POST" if kind == "payload" else "GET",
            url=TRANSFER_URL + channel.id,
            expires_at=channel.expires_wall,
            properties=properties,
        )
        try:
            await self.store.offer_transfer(job_id, lease, kind, info)
        except BaseException:
            channel.end(Outcome.CLOSED, "not offered")
            raise
        return info

    async def set_status(
        self,
        job_id: str,
        lease: str | None,
        status: str,
        *,
        progress: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> Job:
        """The worker's state update (``queued`` gives the job back). Raises JobError."""
        job = await self.store.set_status(job_id, lease, status, progress=progress, error=error)
        if status in (Status.QUEUED, Status.CANCELED):
            self.channels.close_job(job_id, f"the worker set the job {status}")
        return job

    async def heartbeat(self, job_id: str, lease: str | None) -> tuple[Job, float]:
        """Renew the lease: the job and the lease's new end (wall clock). Raises JobError."""
        return await self.store.heartbeat(job_id, lease)

    # -- state ---------------------------------------------------------------------------------

    def state(self, now: float) -> dict[str, Any]:
        """The ``jobs`` section of ``/api/state`` (the original's shape) as of ``now``
        (``trio.current_time()`` clock)."""
        workers, worker_counts = self.activity.state(now)
        return {
            "summary": {**self.store.summary(now), **worker_counts},
            "workers": workers,
            "jobs": [job_view(job) for job in self.store.recent(STATE_JOBS)],
        }


class JobsCollector:
    """Prometheus series of a :class:`JobsService`, read at scrape time. Labels are fixed sets
    (states, outcomes): job types come from clients, so they are no label."""

    def __init__(self, service: JobsService) -> None:
        self._service = service

    def describe(self) -> list[Any]:
        return self._families()

    def collect(self) -> list[Any]:
        families = self._families()
        held, created, finished, expired, oldest = families
        store = self._service.store
        counts, totals = store.counts(), store.totals()
        for status in STATUSES:
            held.add_metric([status], counts.get(status, 0))
        created.add_metric([], totals["created"])
        for status in sorted(TERMINAL):
            finished.add_metric([status], totals[status])
        expired.add_metric([], totals["lease_expired"])
        oldest.add_metric([], store.summary(trio.current_time())["oldest_queued_seconds"])
        return families

    @staticmethod
    def _families() -> list[Any]:
        return [
            GaugeMetricFamily("nfrx_jobs", "Jobs held, by state.", labels=["status"]),
            CounterMetricFamily("nfrx_jobs_created", "Jobs created."),
            CounterMetricFamily(
                "nfrx_jobs_finished",
                "Jobs that reached a final state, by that state (completed, failed, canceled).",
                labels=["status"],
            ),
            CounterMetricFamily(
                "nfrx_jobs_lease_expired",
                "Claimed jobs whose worker stopped renewing its lease (then requeued or failed).",
            ),
            GaugeMetricFamily(
                "nfrx_jobs_oldest_queued_seconds", "Age of the oldest job waiting to be claimed."
            ),
        ]
