"""What the instances keep in Redis, and the one place Redis errors become nfrx errors.

Keys (every one carries the hash tag ``{nfrx}``: one slot in a Redis Cluster)::

    {nfrx}:instances                  SET of instance ids (dead ones are removed by whoever
                                      notices their record expired)
    {nfrx}:instance:<id>              an instance's record (JSON: id, url, started_at,
                                      draining, version), PX = 3 heartbeats
    {nfrx}:agents:<id>                the agents of that instance (JSON list), same TTL
    {nfrx}:queue                      ZSET of waiting requests, score = global sequence
    {nfrx}:queue:seq                  the sequence (INCRBY)
    {nfrx}:docling:<task id>          the docling agent that accepted an async task, EX 1 day
    {nfrx}:mcp:<relay>:<session>      an MCP session (JSON: credential hash, protocol
                                      version), PX = MCP_SESSION_IDLE, renewed on use
    {nfrx}:events                     pub/sub channel: {"m": 1} membership changed;
                                      {"q": {"add": [[seq, entry]...], "del": [entry...]}}

Every method is bounded by :data:`TIMEOUT` and raises :class:`ClusterUnavailable` for anything
Redis or the network does wrong (house rule: errors translated once, at the boundary). A method
costs one round trip, :meth:`Store.beat` two.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.exception_groups import leaves

if TYPE_CHECKING:
    from collections.abc import Iterator

PREFIX: Final = "{nfrx}"
INSTANCES: Final = f"{PREFIX}:instances"
QUEUE: Final = f"{PREFIX}:queue"
QUEUE_SEQ: Final = f"{PREFIX}:queue:seq"
EVENTS: Final = f"{PREFIX}:events"

TIMEOUT: Final = 3.0
"""Seconds one store operation may take before Redis counts as unreachable."""
TASK_TTL: Final = 24 * 3600
"""Seconds a docling task's agent is remembered."""


def instance_key(instance_id: str) -> str:
    return f"{PREFIX}:instance:{instance_id}"


def agents_key(instance_id: str) -> str:
    return f"{PREFIX}:agents:{instance_id}"


def task_key(task_id: str) -> str:
    return f"{PREFIX}:docling:{task_id}"


def session_key(relay_id: str, session_id: str) -> str:
    return f"{PREFIX}:mcp:{relay_id}:{session_id}"


class ClusterUnavailable(Exception):
    """Redis could not be used (unreachable, too slow, refused the command); the message says
    how. The caller degrades to what this instance knows alone."""


@contextlib.contextmanager
def translated(what: str, timeout: float = TIMEOUT) -> Iterator[None]:
    """Bound a Redis operation by ``timeout`` (inf: unbounded, a subscription) and turn its
    failures into :class:`ClusterUnavailable`: coredis's errors, the socket's, the closed streams
    of a connection that broke, exception groups of them. Cancelled meanwhile, it lets only the
    cancellation through (coredis's cleanup complains about the connection it closed)."""
    from anyio import BrokenResourceError, ClosedResourceError, EndOfStream
    from coredis.exceptions import RedisError

    failures: tuple[type[BaseException], ...] = (
        RedisError,
        OSError,
        trio.TooSlowError,
        ClosedResourceError,
        BrokenResourceError,
        EndOfStream,
    )
    try:
        with trio.fail_after(timeout):
            yield
    except BaseException as exc:
        found = leaves(exc)
        cancelled = [leaf for leaf in found if isinstance(leaf, trio.Cancelled)]
        others = [leaf for leaf in found if not isinstance(leaf, trio.Cancelled)]
        if not all(isinstance(leaf, failures) for leaf in others):
            raise
        if cancelled:
            if others:
                raise cancelled[0] from None
            raise
        first = others[0]
        if isinstance(first, trio.TooSlowError):
            raise ClusterUnavailable(f"{what}: no answer within {timeout:g} s") from exc
        raise ClusterUnavailable(f"{what}: {type(first).__name__}: {first}") from exc


class CancelledNoise(logging.Filter):
    """Drops coredis's log records about a connection attempt that a cancellation of ours cut
    short (it logs them as errors, with a traceback, when an instance stops)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        return not all(isinstance(leaf, trio.Cancelled) for leaf in leaves(exc))


@attrs.frozen(kw_only=True)
class MemberRecord:
    """An instance as the others see it."""

    id: str
    url: str
    started_at: float
    draining: bool = False
    version: str = ""

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MemberRecord | None:
        try:
            data = json.loads(text)
            return cls(
                id=str(data["id"]),
                url=str(data["url"]),
                started_at=float(data["started_at"]),
                draining=bool(data.get("draining", False)),
                version=str(data.get("version", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@attrs.frozen(kw_only=True)
class Beat:
    """What one heartbeat found."""

    members: dict[str, MemberRecord]
    """Every live instance (this one included), by id."""
    agents: dict[str, list[dict[str, Any]]]
    """The agents each live instance published, by instance id."""
    dead: tuple[str, ...]
    """Ids listed but without a record any more (their TTL ran out); removed from the set."""
    lost: bool
    """This instance's record was gone before this beat wrote it (Redis restarted, or
    evicted it): what it had registered must be written again."""


# The queue's one write: assign fresh sequence numbers, add, remove, and tell the others -- in
# one round trip, atomically (so the others never see a removal before its addition).
# KEYS: seq, queue. ARGV: channel, n, then n pairs (score or "", entry), then entries to remove.
_QUEUE_UPDATE: Final = """
local n = tonumber(ARGV[2])
local fresh = 0
for i = 0, n - 1 do
  if ARGV[3 + 2 * i] == '' then fresh = fresh + 1 end
end
local seq = 0
if fresh > 0 then seq = redis.call('INCRBY', KEYS[1], fresh) - fresh + 1 end
local added, scores, removed = {}, {}, {}
for i = 0, n - 1 do
  local score = ARGV[3 + 2 * i]
  if score == '' then
    score = seq
    seq = seq + 1
  else
    score = tonumber(score)
  end
  redis.call('ZADD', KEYS[2], score, ARGV[4 + 2 * i])
  added[#added + 1] = {score, ARGV[4 + 2 * i]}
  scores[#scores + 1] = score
end
for i = 3 + 2 * n, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  removed[#removed + 1] = ARGV[i]
end
if #added > 0 or #removed > 0 then
  redis.call('PUBLISH', ARGV[1], cjson.encode({q = {add = added, del = removed}}))
end
return scores
"""


class Store:
    """The instances' shared state in one Redis (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._queue_update = client.register_script(_QUEUE_UPDATE)

    async def prepare(self) -> None:
        """Load the queue script (else its first use costs a failed EVALSHA)."""
        with translated("script load"):
            await self.client.script_load(_QUEUE_UPDATE)

    # -- membership and directory --------------------------------------------------------------

    async def beat(self, me: MemberRecord, agents: str | None, ttl: float) -> Beat:
        """Renew this instance's record (and its agents, when ``agents`` is not None: else their
        TTL only), then read every instance's. Two round trips."""
        ttl_ms = int(ttl * 1000)
        with translated("heartbeat"):
            async with self.client.pipeline(transaction=False) as pipe:
                previous = pipe.set(instance_key(me.id), me.to_json(), px=ttl_ms, get=True)
                if agents is None:
                    pipe.pexpire(agents_key(me.id), ttl_ms)
                else:
                    pipe.set(agents_key(me.id), agents, px=ttl_ms)
                pipe.sadd(INSTANCES, [me.id])
                listed = pipe.smembers(INSTANCES)
            lost = await previous is None
            ids = sorted(await listed)
            keys = [key for i in ids for key in (instance_key(i), agents_key(i))]
            values = await self.client.mget(keys) if keys else ()
            members: dict[str, MemberRecord] = {}
            directory: dict[str, list[dict[str, Any]]] = {}
            dead: list[str] = []
            for index, instance_id in enumerate(ids):
                record_text, agents_text = values[2 * index], values[2 * index + 1]
                record = MemberRecord.from_json(record_text) if record_text else None
                if record is None:
                    dead.append(instance_id)
                    continue
                members[instance_id] = record
                directory[instance_id] = _agent_list(agents_text)
            if dead:
                await self.client.srem(INSTANCES, dead)
        return Beat(members=members, agents=directory, dead=tuple(dead), lost=lost)

    async def announce(self) -> None:
        """Tell the other instances that membership changed (they read it at once)."""
        with translated("announce"):
            await self.client.publish(EVENTS, '{"m":1}')

    async def leave(self, instance_id: str) -> None:
        """Remove this instance's record and agents, and say so."""
        with translated("leave"):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete([instance_key(instance_id), agents_key(instance_id)])
                pipe.srem(INSTANCES, [instance_id])
                pipe.publish(EVENTS, '{"m":1}')

    # -- queue order ---------------------------------------------------------------------------

    async def queue_update(
        self, adds: list[tuple[int | None, str]], removes: list[str]
    ) -> list[int]:
        """Add entries (with their score, or None for the next of the sequence) and remove
        entries, publishing the change; returns the scores of the added entries, in order."""
        args: list[str] = [EVENTS, str(len(adds))]
        for score, entry in adds:
            args += ["" if score is None else str(score), entry]
        args += removes
        with translated("queue update"):
            scores = await self._queue_update(keys=[QUEUE_SEQ, QUEUE], args=args)
        return [int(score) for score in scores]

    async def queue(self) -> list[tuple[int, str]]:
        """Every waiting entry, oldest first."""
        with translated("queue read"):
            entries = await self.client.zrange(QUEUE, 0, -1, withscores=True)
        return [(int(score), str(entry)) for entry, score in entries]

    async def queue_remove(self, entries: list[str]) -> None:
        """Remove entries (of instances that died) and tell the others."""
        if entries:
            await self.queue_update([], entries)

    # -- docling tasks and MCP sessions ----------------------------------------------------------

    async def put_task(self, task_id: str, agent_id: str) -> None:
        with translated("docling task write"):
            await self.client.set(task_key(task_id), agent_id, ex=TASK_TTL)

    async def get_task(self, task_id: str) -> str | None:
        with translated("docling task read"):
            agent: str | None = await self.client.get(task_key(task_id))
        return agent

    async def put_session(self, relay_id: str, session_id: str, value: str, ttl: float) -> None:
        with translated("MCP session write"):
            await self.client.set(session_key(relay_id, session_id), value, px=int(ttl * 1000))

    async def touch_session(self, relay_id: str, session_id: str, ttl: float) -> None:
        with translated("MCP session renewal"):
            await self.client.pexpire(session_key(relay_id, session_id), int(ttl * 1000))

    async def get_session(self, relay_id: str, session_id: str) -> str | None:
        with translated("MCP session read"):
            value: str | None = await self.client.get(session_key(relay_id, session_id))
        return value

    async def drop_session(self, relay_id: str, session_id: str) -> None:
        with translated("MCP session delete"):
            await self.client.delete([session_key(relay_id, session_id)])


def _agent_list(text: str | None) -> list[dict[str, Any]]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
