"""Which workers asked this server for jobs lately: the ``workers`` list of the jobs state.

Display only (nothing routes on it), per server instance, and bounded: a worker is *active* when
seen within :data:`ACTIVE_WINDOW`, forgotten after :data:`RETENTION` unless it holds a claim
stream open, and at most :data:`MAX_WORKERS` are kept (the least recently seen go first). A worker
is identified as in the original: ``<worker_id>::<worker_group>``.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.plugins.transfer.channels import rfc3339_seconds

if TYPE_CHECKING:
    from nfrx.plugins.jobs.model import Claimer

ACTIVE_WINDOW: Final = 60.0
RETENTION: Final = 600.0
MAX_WORKERS: Final = 1000


class ClaimMode:
    POLL: Final = "poll"
    STREAM: Final = "stream"


@attrs.define(eq=False)
class _Worker:
    key: str
    worker_id: str
    worker_group: str
    last_seen: float = 0.0
    """``trio.current_time()``."""
    last_seen_wall: float = 0.0
    last_claim_wall: float | None = None
    last_claim_mode: str = ""
    last_job_id: str = ""
    types: tuple[str, ...] = ()
    streams: int = 0


class WorkerActivity:
    """See the module docstring."""

    def __init__(self) -> None:
        self._workers: collections.OrderedDict[str, _Worker] = collections.OrderedDict()

    def seen(self, claimer: Claimer, mode: str, job_id: str = "") -> None:
        """``claimer`` asked for work (and got ``job_id``, if given)."""
        worker = self._worker(claimer)
        worker.last_claim_mode = mode
        worker.types = tuple(sorted(claimer.types))
        if job_id:
            worker.last_job_id = job_id
            worker.last_claim_wall = worker.last_seen_wall

    def stream_opened(self, claimer: Claimer) -> None:
        self._worker(claimer).streams += 1
        self.seen(claimer, ClaimMode.STREAM)

    def stream_closed(self, claimer: Claimer) -> None:
        worker = self._workers.get(_key(claimer))
        if worker is not None:
            worker.streams -= 1

    def state(self, now: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The workers (sorted by key) and the counts ``active_workers``, ``recent_workers``
        and ``streaming_workers``, as of ``now`` (``trio.current_time()`` clock)."""
        self._prune(now)
        views = []
        counts = {"active_workers": 0, "recent_workers": 0, "streaming_workers": 0}
        for key in sorted(self._workers):
            worker = self._workers[key]
            active = now - worker.last_seen <= ACTIVE_WINDOW
            counts["active_workers"] += active
            counts["recent_workers"] += 1
            counts["streaming_workers"] += worker.streams > 0
            view: dict[str, Any] = {"key": key}
            optional: list[tuple[str, Any]] = [
                ("worker_id", worker.worker_id),
                ("worker_group", worker.worker_group),
            ]
            view.update((name, value) for name, value in optional if value)
            view["last_seen_at"] = rfc3339_seconds(worker.last_seen_wall)
            claimed = worker.last_claim_wall
            optional = [
                ("last_claim_at", claimed and rfc3339_seconds(claimed)),
                ("last_claim_mode", worker.last_claim_mode),
                ("last_job_id", worker.last_job_id),
                ("types", list(worker.types)),
                ("stream_count", worker.streams),
            ]
            view.update((name, value) for name, value in optional if value)
            view["active"] = active
            views.append(view)
        return views, counts

    def _worker(self, claimer: Claimer) -> _Worker:
        key = _key(claimer)
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = _Worker(key, claimer.worker_id, claimer.worker_group)
        self._workers.move_to_end(key)
        worker.last_seen = trio.current_time()
        worker.last_seen_wall = time.time()
        self._prune(worker.last_seen)
        return worker

    def _prune(self, now: float) -> None:
        while len(self._workers) > MAX_WORKERS:
            self._workers.popitem(last=False)
        stale = []
        for key, worker in self._workers.items():  # least recently seen first
            if now - worker.last_seen <= RETENTION:
                break
            if worker.streams <= 0:
                stale.append(key)
        for key in stale:
            del self._workers[key]


def _key(claimer: Claimer) -> str:
    return f"{claimer.worker_id}::{claimer.worker_group}"
