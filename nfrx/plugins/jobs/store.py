"""Where jobs live: the :class:`JobStore` interface the routes use.

Every mutating method is one **atomic step** -- it checks and changes a job (and appends the job's
event) with nothing interleaved -- so routes never hold a lock and never see half a change. Methods
are ``async`` so that an implementation may do I/O; today's :class:`~.memory.MemoryJobStore` does
none. Deadlines (client TTL, lease, retention) are kept by the store and applied by
:meth:`JobStore.expire`, which the jobs service calls when :meth:`JobStore.next_deadline` passes.

Waiting without lost wake-ups: a waiter reads a *version* before it tries (``queue_version``
before ``claim_next``, a job's event cursor before reading its events) and then waits for the
version to move past what it read; the wait returns at once if it moved in between. Two claimers
waiting and two jobs created therefore claim both, whatever the interleaving.

**Redis** (``REDIS_URL``): :class:`~.redis_store.RedisJobStore` reads a job's record with
Redis' clock (``TIME``: instances' clocks differ), decides the step with these same rules, and
commits it with one compare-and-set script that also appends the job's events, moves its queue
and deadline entries and publishes the change; waits follow those messages. Its module
docstring and :mod:`.redis_schema` hold the details.

Transfers are not in the store: a job only records the channels offered on it. Their bytes flow
between the instances that hold the two sides (see :mod:`nfrx.plugins.transfer.channels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from nfrx.plugins.jobs.model import Claim, Claimer, Job, JobEvent, JobSpec, TransferInfo


@attrs.frozen(kw_only=True)
class StoreSettings:
    """The store's share of the configuration (``JOBS_*``)."""

    client_ttl: float = 30.0
    """0: jobs never time out for lack of a client."""
    lease_seconds: float = 120.0
    lease_required: bool = True
    requeue_expired: bool = True
    retention: float = 300.0
    max_jobs: int = 10_000


@attrs.frozen
class Subscription:
    """A subscriber's start: the job now, and the cursor its events continue from."""

    job: Job
    cursor: int


@attrs.frozen
class EventBatch:
    """Events after a cursor, and the cursor to continue from. ``gap``: the subscriber fell
    further behind than the job's event log; ``events`` is then one ``status`` snapshot of now."""

    events: list[JobEvent]
    cursor: int
    gap: bool = False


class JobStore(Protocol):
    """The atomic steps of the jobs API (see the module docstring). Job ids are opaque strings;
    errors are those of :mod:`nfrx.plugins.jobs.model`."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The store's own background work, if any (started by the jobs service's task, until
        cancelled); errors of the steps below may include :class:`~.model.StoreUnavailable`."""
        ...

    # -- client side ---------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> Job:
        """Queue a new job. Raises :class:`~.model.StoreFull`."""
        ...

    async def get(self, job_id: str) -> Job | None:
        """The job now (with its queue position), or None."""
        ...

    async def touch_client(self, job_id: str) -> None:
        """The client showed a sign of life (a poll): its TTL starts again."""
        ...

    async def cancel(self, job_id: str, error: dict[str, str] | None = None) -> tuple[Job, bool]:
        """Cancel a live job; a finished one is returned unchanged. True if this call changed
        it. Raises :class:`~.model.JobNotFound`."""
        ...

    # -- worker side ---------------------------------------------------------------------------

    async def claim_next(self, claimer: Claimer) -> Claim | None:
        """Claim the first queued job ``claimer`` accepts (higher priority first, then oldest),
        with a new lease; None if there is none."""
        ...

    async def release(self, job_id: str, claim: int) -> None:
        """Put back a claim that never reached its worker (only if claim ``claim`` still holds
        the job)."""
        ...

    async def set_status(
        self,
        job_id: str,
        lease: str | None,
        status: str,
        *,
        progress: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> Job:
        """The worker holding lease ``lease`` posts a state (``queued`` gives the job back).
        Renews the lease. Raises JobNotFound, InvalidState, LeaseMismatch."""
        ...

    async def offer_transfer(
        self, job_id: str, lease: str | None, kind: str, info: TransferInfo
    ) -> Job:
        """Record channel ``info`` as the job's ``payload`` or ``result`` (``kind``) and move
        to ``awaiting_<kind>``. Renews the lease. Raises as :meth:`set_status`, and
        :class:`~.model.InvalidState` past the transfers a job may hold."""
        ...

    async def heartbeat(self, job_id: str, lease: str | None) -> tuple[Job, float]:
        """Renew the lease; the job and the lease's new end (wall clock). Raises as
        :meth:`set_status`."""
        ...

    # -- subscribers ---------------------------------------------------------------------------

    async def subscribe(self, job_id: str) -> Subscription | None:
        """Count a subscriber (the client TTL stops while there is one); None if no such
        job."""
        ...

    async def unsubscribe(self, job_id: str) -> None:
        """The subscriber left; the last one leaving starts the client TTL."""
        ...

    async def events_after(self, job_id: str, cursor: int) -> EventBatch | None:
        """The job's events after ``cursor``; None once the job is gone."""
        ...

    async def wait_job(self, job_id: str, cursor: int) -> None:
        """Return when the job has events after ``cursor``, or is gone."""
        ...

    # -- versions and waits --------------------------------------------------------------------

    async def queue_version(self) -> int:
        """Moves whenever a job becomes claimable (created, or back in the queue)."""
        ...

    async def wait_queue(self, seen: int) -> None:
        """Return once :meth:`queue_version` differs from ``seen``."""
        ...

    async def version(self) -> int:
        """Moves on every change of any job."""
        ...

    async def wait_changed(self, seen: int) -> None:
        """Return once :meth:`version` differs from ``seen``."""
        ...

    # -- time ----------------------------------------------------------------------------------

    async def next_deadline(self) -> float:
        """When :meth:`expire` has work next (``trio.current_time()`` clock; inf: never)."""
        ...

    async def expire(self) -> list[Job]:
        """Apply every deadline that passed: client TTLs (``canceled``), leases (``queued`` or
        ``failed``) and retention (finished jobs forgotten). Returns the jobs whose state
        changed."""
        ...

    # -- state and metrics (synchronous: see the module docstring) -----------------------------

    def counts(self) -> dict[str, int]:
        """Jobs held per state."""
        ...

    def totals(self) -> dict[str, int]:
        """Lifetime counters: ``created``, ``completed``, ``failed``, ``canceled``,
        ``lease_expired``."""
        ...

    def summary(self, now: float) -> dict[str, Any]:
        """The job fields of the original's state summary (see :mod:`.service`), ages at
        ``now`` (``trio.current_time()`` clock)."""
        ...

    def recent(self, limit: int) -> list[Job]:
        """The ``limit`` most recently updated jobs, newest first."""
        ...
