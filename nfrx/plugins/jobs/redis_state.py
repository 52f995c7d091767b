"""The shared job store's copy of the jobs state: what the synchronous readers of
:class:`~.store.JobStore` (``counts``, ``totals``, ``summary``, ``recent``) answer from.

:meth:`StateCopy.refresh` reads the counters the write script keeps (``{nfrx}:jobs:stats``), the
oldest queued and held times and the most recently updated jobs -- of the whole gateway, since
every instance writes them. The store refreshes it after every change it applies or hears of.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from nfrx.plugins.jobs.model import TERMINAL, Job, Status
from nfrx.plugins.jobs.redis_schema import (
    HELD_SINCE,
    QUEUED_SINCE,
    RECENT,
    STATS,
    Record,
    job_key,
)
from nfrx.plugins.transfer.channels import rfc3339_seconds

RECENT_JOBS: Final = 12
"""Recent jobs kept (the state lists 12)."""


class StateCopy:
    """See the module docstring."""

    def __init__(self) -> None:
        self._stats: dict[str, float] = {}
        self._last: dict[str, str] = {}
        self._oldest: dict[str, float] = {}
        self._recent: list[Job] = []
        self.offset = 0.0
        """Redis' clock minus ``trio.current_time()`` at the last refresh."""

    async def refresh(self, client: Any) -> None:
        """Read the copy again (two round trips); raises what coredis raises."""
        async with client.pipeline(transaction=False) as pipe:
            now_reply = pipe.time()
            stats_reply = pipe.hgetall(STATS)
            oldest = [pipe.zrange(key, 0, 0, withscores=True) for key in (QUEUED_SINCE, HELD_SINCE)]
            recent_reply = pipe.zrevrange(RECENT, 0, RECENT_JOBS - 1)
        self.offset = (await now_reply).timestamp() - trio.current_time()
        stats = await stats_reply
        queued, held = [await reply for reply in oldest]
        ids = [str(job_id) for job_id in await recent_reply]
        async with client.pipeline(transaction=False) as pipe:
            records = [pipe.hget(job_key(job_id), "data") for job_id in ids]
        texts = [await reply for reply in records]
        self._stats = {k: float(v) for k, v in stats.items() if not k.startswith("last_")}
        self._last = {k: v for k, v in stats.items() if k.startswith("last_")}
        self._oldest = {
            name: float(entries[0][1])
            for name, entries in (("queued", queued), ("held", held))
            if entries
        }
        self._recent = [Record.loads(text).job for text in texts if text is not None]

    def counts(self) -> dict[str, int]:
        return {
            key.removeprefix("n:"): int(value)
            for key, value in self._stats.items()
            if key.startswith("n:") and value
        }

    def totals(self) -> dict[str, int]:
        names = ("created", "completed", "failed", "canceled", "lease_expired")
        return {name: int(self._stats.get(name, 0)) for name in names}

    def summary(self, now: float) -> dict[str, Any]:
        stats, counts = self._stats, self.counts()
        redis_now = now + self.offset

        def age(name: str) -> int:
            since = self._oldest.get(name)
            return max(0, int(redis_now - since)) if since is not None else 0

        def average(name: str) -> int:
            samples = stats.get(f"{name}_samples", 0)
            return int(stats.get(name, 0) * 1000 / samples) if samples else 0

        summary: dict[str, Any] = {
            "total_jobs": int(stats.get("jobs", 0)),
            "queued_jobs": counts.get(Status.QUEUED, 0),
            "claimed_jobs": counts.get(Status.CLAIMED, 0),
            "running_jobs": counts.get(Status.RUNNING, 0),
            "awaiting_transfers": counts.get(Status.AWAITING_PAYLOAD, 0)
            + counts.get(Status.AWAITING_RESULT, 0),
            "terminal_jobs": sum(counts.get(status, 0) for status in TERMINAL),
            "completed_jobs": int(stats.get(Status.COMPLETED, 0)),
            "failed_jobs": int(stats.get(Status.FAILED, 0)),
            "canceled_jobs": int(stats.get(Status.CANCELED, 0)),
            "oldest_queued_seconds": age("queued"),
            "oldest_inflight_seconds": age("held"),
            "avg_queue_wait_ms": average("queue_wait"),
            "avg_service_ms": average("service"),
            "avg_end_to_end_ms": average("end_to_end"),
        }
        for status in (Status.COMPLETED, Status.FAILED, Status.CANCELED):
            last = self._last.get(f"last_{status}_at")
            if last is not None:
                summary[f"last_{status}_at"] = rfc3339_seconds(float(last))
        return summary

    def recent(self, limit: int) -> list[Job]:
        return self._recent[:limit]
