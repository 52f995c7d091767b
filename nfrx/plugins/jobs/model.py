"""Jobs: their states, which operation may move a job from which state, and their JSON views.

The states and the JSON shapes are the original nfrx's (``JobView``, the claim object,
``TransferInfo``). :data:`ALLOWED_FROM` is the one table of what may happen in each state; the
store checks every operation against it and answers :class:`InvalidState` otherwise.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from nfrx.plugins.transfer.channels import rfc3339_seconds


class Status:
    QUEUED: Final = "queued"
    CLAIMED: Final = "claimed"
    AWAITING_PAYLOAD: Final = "awaiting_payload"
    RUNNING: Final = "running"
    AWAITING_RESULT: Final = "awaiting_result"
    COMPLETED: Final = "completed"
    FAILED: Final = "failed"
    CANCELED: Final = "canceled"


STATUSES: Final = (
    Status.QUEUED,
    Status.CLAIMED,
    Status.AWAITING_PAYLOAD,
    Status.RUNNING,
    Status.AWAITING_RESULT,
    Status.COMPLETED,
    Status.FAILED,
    Status.CANCELED,
)
"""Every documented state; ``/status`` accepts these and nothing else."""

HELD: Final = frozenset(
    {Status.CLAIMED, Status.AWAITING_PAYLOAD, Status.RUNNING, Status.AWAITING_RESULT}
)
"""A worker holds the job under a lease."""

TERMINAL: Final = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})

LIVE: Final = frozenset({Status.QUEUED}) | HELD


class Op:
    """What can happen to a job (rows of :data:`ALLOWED_FROM`)."""

    CLAIM: Final = "claim"
    """A worker takes it: ``claimed``."""
    RELEASE: Final = "release"
    """A claim that never reached its worker is given back: ``queued``."""
    OFFER_TRANSFER: Final = "offer_transfer"
    """The worker opens a payload or result channel: ``awaiting_payload``/``awaiting_result``."""
    SET_STATUS: Final = "set_status"
    """The worker posts a state: any of :data:`STATUSES` (``queued`` gives the job back)."""
    HEARTBEAT: Final = "heartbeat"
    """The worker renews its lease: unchanged."""
    CANCEL: Final = "cancel"
    """The client cancels it: ``canceled`` (on a finished job: nothing, answered as done)."""
    CLIENT_TIMEOUT: Final = "client_timeout"
    """Nobody followed it for ``JOBS_CLIENT_TTL``: ``canceled`` (``client_inactive``)."""
    LEASE_EXPIRY: Final = "lease_expiry"
    """Its worker went silent for ``JOBS_LEASE_SECONDS``: ``queued``, or ``failed``."""


ALLOWED_FROM: Final[dict[str, frozenset[str]]] = {
    Op.CLAIM: frozenset({Status.QUEUED}),
    Op.RELEASE: HELD,
    Op.OFFER_TRANSFER: HELD,
    Op.SET_STATUS: HELD,
    Op.HEARTBEAT: HELD,
    Op.CANCEL: LIVE,
    Op.CLIENT_TIMEOUT: LIVE,
    Op.LEASE_EXPIRY: HELD,
}
"""The states each operation may start from (the transition table)."""


class JobError(Exception):
    """A jobs operation refused; the routes map each kind to its status."""


class JobNotFound(JobError):
    """No such job (never created, or forgotten after ``JOBS_RETENTION``): 404."""


class InvalidState(JobError):
    """The job's state does not allow the operation: 409 ``invalid_state``."""

    def __init__(self, status: str, why: str = "") -> None:
        if not why:
            why = "it is finished" if status in TERMINAL else "no worker holds it"
            if status in HELD:
                why = "this is not possible in that state"
        super().__init__(f"the job is {status}: {why}")
        self.status = status


class LeaseMismatch(JobError):
    """The caller does not hold the job's lease: 403."""


class StoreFull(JobError):
    """``JOBS_MAX`` jobs are held and none is finished: 503."""


class StoreUnavailable(JobError):
    """The shared job store (Redis, ``REDIS_URL``) cannot be reached; the message says how:
    503 ``jobs_unavailable``."""


@attrs.frozen(kw_only=True)
class JobSpec:
    """What a client asks for (``POST /api/jobs``)."""

    type: str
    metadata: dict[str, Any] | None = None
    priority: int = 0
    worker_id: str = ""
    worker_group: str = ""


@attrs.frozen(kw_only=True)
class Claimer:
    """Who asks for work, and for which work (claims and claim streams)."""

    worker_id: str = ""
    worker_group: str = ""
    types: frozenset[str] = frozenset()
    """Empty: any type."""

    def accepts(self, job: Job) -> bool:
        """The original's affinity rule: a job's ``worker_id`` and ``worker_group``, where set,
        must equal the claimer's; its type must be one of ``types`` (if given)."""
        if self.types and job.type not in self.types:
            return False
        if job.worker_id and job.worker_id != self.worker_id:
            return False
        return not (job.worker_group and job.worker_group != self.worker_group)


@attrs.frozen(kw_only=True)
class TransferInfo:
    """A transfer channel offered on a job, as the client sees it."""

    key: str
    channel_id: str
    method: str
    """``POST`` for a payload (the client writes), ``GET`` for a result (the client reads)."""
    url: str
    expires_at: float
    """Wall clock."""
    properties: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "channel_id": self.channel_id,
            "method": self.method,
            "url": self.url,
            "expires_at": rfc3339_seconds(self.expires_at),
        }
        if self.key:
            view["key"] = self.key
        if self.properties:
            view["properties"] = self.properties
        return view


@attrs.frozen(kw_only=True)
class Job:
    """A snapshot of one job (the store hands out these, never its own records)."""

    id: str
    type: str
    status: str
    priority: int = 0
    metadata: dict[str, Any] | None = None
    worker_id: str = ""
    worker_group: str = ""
    claimed_worker_id: str = ""
    claimed_worker_group: str = ""
    progress: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    payloads: dict[str, TransferInfo] = attrs.field(factory=dict)
    results: dict[str, TransferInfo] = attrs.field(factory=dict)
    created_at: float
    """Wall clock, like ``updated_at``."""
    updated_at: float
    claim: int = 0
    """Which claim holds it (counts claims of this job; 0: never claimed)."""
    queue_position: int = 0
    """1-based place in the queue while ``queued`` (0 otherwise)."""


def job_view(job: Job) -> dict[str, Any]:
    """The original's ``JobView`` (empty fields left out), plus ``priority`` when set."""
    view: dict[str, Any] = {"id": job.id, "type": job.type, "status": job.status}
    if job.priority:
        view["priority"] = job.priority
    optional: list[tuple[str, Any]] = [
        ("metadata", job.metadata),
        ("worker_id", job.worker_id),
        ("worker_group", job.worker_group),
        ("claimed_worker_id", job.claimed_worker_id),
        ("claimed_worker_group", job.claimed_worker_group),
        ("progress", job.progress),
        ("error", job.error),
        ("payloads", {key: info.view() for key, info in job.payloads.items()}),
        ("results", {key: info.view() for key, info in job.results.items()}),
        ("queue_position", job.queue_position),
    ]
    view.update((name, value) for name, value in optional if value)
    view["created_at"] = rfc3339_seconds(job.created_at)
    view["updated_at"] = rfc3339_seconds(job.updated_at)
    return view


@attrs.frozen(kw_only=True)
class Claim:
    """A job a worker took, with the lease that makes it that worker's."""

    job: Job
    lease_token: str
    lease_expires_at: float
    """Wall clock; every post by the worker pushes it back."""
    lease_seconds: float

    def view(self) -> dict[str, Any]:
        """The original's claim object (empty strings kept), plus the lease."""
        job = self.job
        return {
            "job_id": job.id,
            "type": job.type,
            "metadata": job.metadata,
            "worker_id": job.worker_id,
            "worker_group": job.worker_group,
            "claimed_worker_id": job.claimed_worker_id,
            "claimed_worker_group": job.claimed_worker_group,
            "lease_token": self.lease_token,
            "lease_expires_at": rfc3339_seconds(self.lease_expires_at),
            "lease_seconds": self.lease_seconds,
        }


@attrs.frozen
class JobEvent:
    """One event of a job's stream: ``status`` (a job view), ``payload`` or ``result`` (a
    transfer view)."""

    seq: int
    name: str
    data: dict[str, Any]
