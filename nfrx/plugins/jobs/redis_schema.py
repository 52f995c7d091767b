"""The jobs' Redis schema: keys, the one write script, and a job's record as the store edits it.

Keys (every one carries the cluster's hash tag ``{nfrx}``: one slot in a Redis Cluster)::

    {nfrx}:job:<id>              HASH: rev (the record's version), data (the record, JSON),
                                 aff (JSON [type, worker_id, worker_group]: what a claim filters)
    {nfrx}:job:<id>:events       LIST of the job's last EVENT_LOG events (JSON {seq, name, data})
    {nfrx}:jobs:seq              creation order (INCR)
    {nfrx}:jobs:queue            ZSET of queued jobs: score -priority, member "<seq:016d>:<id>"
                                 (equal scores sort by member: creation order)
    {nfrx}:jobs:deadlines        ZSET "c:<id>" (client TTL) and "l:<id>" (lease), score: when
    {nfrx}:jobs:finished         ZSET of finished jobs, score: when they are forgotten
    {nfrx}:jobs:queued_since     ZSET of queued jobs by creation time   (the state's "oldest"
    {nfrx}:jobs:held_since       ZSET of held jobs by claim time         ages)
    {nfrx}:jobs:recent           ZSET of jobs by last update (the state's recent jobs)
    {nfrx}:jobs:stats            HASH: jobs (held), n:<status> (held per state), the lifetime
                                 totals and sums of the averages, last_<status>_at
    {nfrx}:jobs                  pub/sub channel: one message per change (see below)

Times are Redis' own clock (``TIME``, read in the same round trip as the record), never an
instance's: the instances' clocks differ.

**The write script** (:data:`COMMIT`), the only way anything above changes: a compare-and-set
of one job's record. The store reads the record (``rev`` included), decides the change in Python
with the same rules as :mod:`.memory`, and commits it with the ``rev`` it read; the script applies
nothing and returns 0 if the record moved meanwhile (another instance won), and the store reads
again. So every step is atomic and two instances never both apply one (two claimers of one job,
two instances expiring one lease).

``KEYS``: 1 job, 2 events, 3 queue, 4 deadlines, 5 finished, 6 stats, 7 recent, 8 queued_since,
9 held_since. ``ARGV``: 1 job id, 2 the rev read (``""``: the job must not exist), 3 the new
record (``""``: delete the job and its events), 4 aff, 5 the queue member to remove (``""``:
none), 6 the queue member to add, 7 its score, 8 client deadline, 9 lease deadline, 10 forget
time, 11 queued since, 12 held since, 13 recent score (``""``: every time argument here means
"not in that set"), 14 events to append (a JSON list of JSON texts), 15 the event log's length,
16 stats (JSON ``{"i": {field: increment}, "s": {field: value}}``), 17 cap (``""`` or the
``JOBS_MAX`` a new job must stay under: returns -1 past it), 18 channel, 19 message (``""``: say
nothing). Returns 1 when applied.

**Messages** on ``{nfrx}:jobs``: ``{"i": instance, "j": job id, "q": 1 if the job became
claimable, "x": 1 if it left its worker other than by the worker's hand (canceled, back in the
queue, lease lost: the instances close its transfer channels), "g": 1 if it is gone}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import cattrs

from nfrx.cluster.store import PREFIX, ClusterUnavailable, translated
from nfrx.plugins.jobs.model import (
    HELD,
    LIVE,
    TERMINAL,
    Job,
    JobEvent,
    Status,
    StoreUnavailable,
    job_view,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nfrx.plugins.jobs.store import StoreSettings

SEQ: Final = f"{PREFIX}:jobs:seq"
QUEUE: Final = f"{PREFIX}:jobs:queue"
DEADLINES: Final = f"{PREFIX}:jobs:deadlines"
FINISHED: Final = f"{PREFIX}:jobs:finished"
QUEUED_SINCE: Final = f"{PREFIX}:jobs:queued_since"
HELD_SINCE: Final = f"{PREFIX}:jobs:held_since"
RECENT: Final = f"{PREFIX}:jobs:recent"
STATS: Final = f"{PREFIX}:jobs:stats"
CHANNEL: Final = f"{PREFIX}:jobs"

CLIENT_PREFIX: Final = "c:"
LEASE_PREFIX: Final = "l:"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def keys(job_id: str) -> list[str]:
    """The script's ``KEYS`` for ``job_id``."""
    return [
        job_key(job_id),
        events_key(job_id),
        QUEUE,
        DEADLINES,
        FINISHED,
        STATS,
        RECENT,
        QUEUED_SINCE,
        HELD_SINCE,
    ]


COMMIT: Final = """
local rev = redis.call('HGET', KEYS[1], 'rev') or ''
if rev ~= ARGV[2] then return 0 end
if ARGV[17] ~= '' then
  if tonumber(redis.call('HGET', KEYS[6], 'jobs') or '0') >= tonumber(ARGV[17]) then
    return -1
  end
end
local id = ARGV[1]
local function place(key, member, score)
  if score == '' then redis.call('ZREM', key, member)
  else redis.call('ZADD', key, score, member) end
end
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[3], ARGV[5]) end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('HSET', KEYS[1], 'rev', (tonumber(rev) or 0) + 1, 'data', ARGV[3], 'aff', ARGV[4])
  if ARGV[6] ~= '' then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6]) end
  local events = cjson.decode(ARGV[14])
  for i = 1, #events do redis.call('RPUSH', KEYS[2], events[i]) end
  if #events > 0 then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[15]), -1) end
end
place(KEYS[4], 'c:' .. id, ARGV[8])
place(KEYS[4], 'l:' .. id, ARGV[9])
place(KEYS[5], id, ARGV[10])
place(KEYS[8], id, ARGV[11])
place(KEYS[9], id, ARGV[12])
if ARGV[3] == '' or ARGV[13] ~= '' then place(KEYS[7], id, ARGV[13]) end
local stats = cjson.decode(ARGV[16])
for field, value in pairs(stats['i']) do redis.call('HINCRBYFLOAT', KEYS[6], field, value) end
for field, value in pairs(stats['s']) do redis.call('HSET', KEYS[6], field, value) end
if ARGV[19] ~= '' then redis.call('PUBLISH', ARGV[18], ARGV[19]) end
return 1
"""

_converter = cattrs.Converter()


@attrs.define(kw_only=True)
class Record:
    """A job and the store's bookkeeping about it (the ``data`` field; times: Redis clock)."""

    job: Job
    seq: int
    created: float
    claimed: float | None = None
    lease_token: str = ""
    lease_deadline: float = math.inf
    client_deadline: float = math.inf
    forget_at: float = math.inf
    subscribers: int = 0
    cursor: int = 0

    @property
    def queue_member(self) -> str:
        return f"{self.seq:016d}:{self.job.id}"

    def dumps(self) -> str:
        data = _converter.unstructure(self)
        for name in ("lease_deadline", "client_deadline", "forget_at"):
            if math.isinf(data[name]):
                data[name] = None
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Record:
        data = json.loads(text)
        for name in ("lease_deadline", "client_deadline", "forget_at"):
            if data.get(name) is None:
                data[name] = math.inf
        return _converter.structure(data, cls)

    def affinity(self) -> str:
        return json.dumps([self.job.type, self.job.worker_id, self.job.worker_group])


def _time(value: float | None) -> str:
    return "" if value is None or math.isinf(value) else repr(value)


class Draft:
    """One step's change of one job, decided from the record read at ``now`` (Redis clock); the
    methods mirror :class:`~.memory.MemoryJobStore`'s internals. ``changed`` is False for a step
    that found nothing to do; :meth:`commit_args` is the script's ``ARGV``."""

    def __init__(
        self, rev: str, record: Record | None, now: float, settings: StoreSettings
    ) -> None:
        self.rev = rev
        """The rev read (``""``: a new job)."""
        self.before = None if record is None else attrs.evolve(record)
        self.record = record
        self.now = now
        self.settings = settings
        self.changed = False
        self.deleted = False
        self.touched = False
        """The job was updated (it moves to the front of the recent jobs)."""
        self.events: list[str] = []
        self.increments: dict[str, float] = {}
        self.sets: dict[str, str] = {}
        self.queue_moved = False
        self.left_worker = False
        self.announce = True
        """Publish a message (a step that only moves a client TTL later need not)."""
        self.cap: int | None = None

    @property
    def entry(self) -> Record:
        assert self.record is not None
        return self.record

    def snapshot(self) -> Job:
        """The job as this step leaves it (its queue position is not known here: 0)."""
        return self.entry.job

    def count(self, field: str, delta: float = 1) -> None:
        self.increments[field] = self.increments.get(field, 0) + delta

    # -- the memory store's internals, on one record -------------------------------------------

    def set(self, status: str, **changes: Any) -> None:
        entry = self.entry
        before = entry.job.status
        entry.job = attrs.evolve(entry.job, status=status, updated_at=time.time(), **changes)
        self.changed = self.touched = True
        self.count(f"n:{before}", -1)
        self.count(f"n:{status}")
        if status not in HELD:
            entry.lease_token = ""
            entry.lease_deadline = math.inf
        if status in TERMINAL and before not in TERMINAL:
            self._finish(status)
        if status == Status.CANCELED or (status == Status.QUEUED and before != Status.QUEUED):
            self.left_worker = True
        self.publish_status()

    def requeue(self) -> None:
        self.entry.claimed = None
        self.set(
            Status.QUEUED,
            claimed_worker_id="",
            claimed_worker_group="",
            progress=None,
            error=None,
            payloads={},
            results={},
        )
        self.start_client_ttl()
        self.queue_moved = True

    def _finish(self, status: str) -> None:
        entry, now = self.entry, self.now
        self.count(status)
        self.sets[f"last_{status}_at"] = repr(time.time())
        self.count("end_to_end", now - entry.created)
        self.count("end_to_end_samples")
        if entry.claimed is not None:
            self.count("service", now - entry.claimed)
            self.count("service_samples")
        elif status == Status.CANCELED:
            self.count("queue_wait", now - entry.created)
            self.count("queue_wait_samples")
        entry.client_deadline = math.inf
        entry.forget_at = now + self.settings.retention

    def start_client_ttl(self) -> None:
        entry, ttl = self.entry, self.settings.client_ttl
        if ttl > 0 and entry.job.status in LIVE and entry.subscribers == 0:
            entry.client_deadline = self.now + ttl
            self.changed = True

    def renew(self) -> None:
        self.entry.lease_deadline = self.now + self.settings.lease_seconds
        self.changed = True

    def publish(self, name: str, data: dict[str, Any]) -> None:
        entry = self.entry
        entry.cursor += 1
        event = {"seq": entry.cursor, "name": name, "data": data}
        self.events.append(json.dumps(event, separators=(",", ":")))
        self.changed = True

    def publish_status(self) -> None:
        self.publish("status", job_view(self.entry.job))

    def delete(self) -> None:
        """Forget the job (it is finished)."""
        self.changed = self.deleted = True
        self.count("jobs", -1)
        self.count(f"n:{self.entry.job.status}", -1)

    # -- the script's arguments ----------------------------------------------------------------

    def commit_args(self, instance_id: str, event_log: int) -> list[str]:
        entry, before = self.entry, self.before
        was_queued = before is not None and before.job.status == Status.QUEUED
        queued = not self.deleted and entry.job.status == Status.QUEUED
        live = not self.deleted
        message = ""
        if self.announce:
            news: dict[str, Any] = {"i": instance_id, "j": entry.job.id}
            for flag, value in (("q", self.queue_moved), ("x", self.left_worker)):
                if value:
                    news[flag] = 1
            if self.deleted:
                news["g"] = 1
            message = json.dumps(news, separators=(",", ":"))
        return [
            entry.job.id,
            self.rev,
            entry.dumps() if live else "",
            entry.affinity(),
            before.queue_member if was_queued and before is not None else "",
            entry.queue_member if queued else "",
            repr(-entry.job.priority),
            _time(entry.client_deadline) if live else "",
            _time(entry.lease_deadline) if live else "",
            _time(entry.forget_at) if live else "",
            _time(entry.created) if queued else "",
            _time(entry.claimed) if live and entry.job.status in HELD else "",
            repr(self.now) if live and self.touched else "",
            json.dumps(self.events),
            str(event_log),
            json.dumps(
                {
                    "i": {k: repr(v) for k, v in self.increments.items()},
                    "s": self.sets,
                }
            ),
            "" if self.cap is None else str(self.cap),
            CHANNEL,
            message,
        ]


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """:func:`~nfrx.cluster.store.translated` (bounded, errors translated), raising
    :class:`~.model.StoreUnavailable`: the one place the job store's Redis errors become nfrx's."""
    try:
        with translated(what):
            yield
    except ClusterUnavailable as failure:
        raise StoreUnavailable(
            f"the shared job store (REDIS_URL) cannot be reached: {failure}"
        ) from None


def event_of(text: str) -> JobEvent:
    data = json.loads(text)
    return JobEvent(int(data["seq"]), str(data["name"]), data["data"])
