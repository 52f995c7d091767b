"""The client keys of several instances, in the Redis they share (``REDIS_URL``).

Keys (every one carries the cluster's hash tag ``{nfrx}``: one slot in a Redis Cluster, so the
scripts below may touch them together)::

    {nfrx}:keys                     HASH key id -> the key's JSON (revoked keys too)
    {nfrx}:keys:rev                 HASH key id -> revision: 1 when created, +1 per change
    {nfrx}:keys:digest              HASH SHA-256 of a secret -> key id
    {nfrx}:keys:name                HASH name -> key id
    {nfrx}:keys:usage:<id>          HASH "<counter>:<model>" -> total, counters ``requests``,
                                    ``errors``, ``refused``, ``cancelled``, ``input_tokens``,
                                    ``output_tokens``; "last_used:<model>" -> Unix seconds
    {nfrx}:keys:usage:seq           INCR by every usage write (a reader re-reads when it moved)
    {nfrx}:keys:win:<id>:<c>:<s>    a window's count, ``<c>`` ``req`` (requests per minute),
                                    ``minute``, ``day``, ``month`` (tokens), ``<s>`` the window's
                                    start (:mod:`.limits`); PEXPIREAT its end + a minute
    {nfrx}:keys:changed             pub/sub channel: {"id", "rev", "key"} after every change

**Scripts** (Lua, atomic; loaded once, then EVALSHA):

* ``SAVE`` -- KEYS: keys, rev, digest, name. ARGV: channel, id, name, digest, JSON, revoked
  (``1``/``0``). Refuses (-1) a name another key holds, refuses (-2) to make a revoked key
  anything but revoked (two admins on two instances: revocation is final); else writes the key,
  its digest and name (freeing a previous name), adds one to its revision, publishes the change
  and returns the revision.
* ``ADMIT`` -- KEYS: keys, rev, then the windows: requests this minute, tokens this minute, today,
  this month. ARGV: id, revision, count (``1``/``0``), the four limits (``""``: none), the request
  window's expiry (ms). Returns ``{0, revision, JSON}`` when the caller's revision is not the
  stored one (nothing counted: it must look again), ``{2, n, used}`` when window ``n`` (1-4) has
  reached its limit (nothing counted), else ``{1}`` -- after counting the request in its minute
  window when ``count`` is 1. The check and the count are one step: N requests allowed per
  window are N whichever instances they reach.
* ``ADD`` -- KEYS: usage seq, U usage hashes, then W window keys. ARGV: U, then 8 per usage hash
  (model, the six counters' deltas, last used or ``""``), then 2 per window (tokens, expiry in
  ms). Adds every delta (``last_used`` keeps the larger) and moves the usage sequence.
* ``LOOK_UP`` -- KEYS: digest, keys, rev. ARGV: a digest. Returns ``{}`` or ``{id, JSON,
  revision}``.

**Failures.** Every call is bounded by :data:`nfrx.cluster.store.TIMEOUT` through
:func:`nfrx.cluster.store.translated`; what Redis or the network does wrong is raised as
:class:`~.store.StoreError` (the keys service's one failure), saying what was being done.

**Connections.** :meth:`RedisKeyStore.run` owns a coredis client of its own for ``REDIS_URL``
(parsed and connected as the cluster does, :mod:`nfrx.cluster.address`), and its subscription.
Not the cluster's client: the keys must be loaded before the server listens, and the last
usage write at shutdown must outlive everything else, while the cluster joins once the server
listens and leaves with it (:mod:`nfrx.server.runner`). The cost is a second small connection
pool per instance.

Durability is Redis's: keys and usage survive an instance's restart, and a restart of Redis as
far as its own persistence (RDB, AOF) is configured to keep them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.cluster.store import PREFIX, CancelledNoise, ClusterUnavailable, translated
from nfrx.plugins.keys.limits import DAY, MINUTE, MONTH, window_end, window_start
from nfrx.plugins.keys.model import ClientKey, Limits
from nfrx.plugins.keys.store import Loaded, StoreError, UsageCounts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from nfrx.plugins.keys.store import UsageKey, WindowKey

log = logging.getLogger("nfrx.keys")

KEYS: Final = f"{PREFIX}:keys"
REVISIONS: Final = f"{PREFIX}:keys:rev"
DIGESTS: Final = f"{PREFIX}:keys:digest"
NAMES: Final = f"{PREFIX}:keys:name"
USAGE_SEQ: Final = f"{PREFIX}:keys:usage:seq"
CHANGED: Final = f"{PREFIX}:keys:changed"

COUNTERS: Final = ("requests", "errors", "refused", "cancelled", "input_tokens", "output_tokens")
WINDOWS: Final = ("req", MINUTE, DAY, MONTH)
"""The four windows :data:`ADMIT` reads, in the order of the limits they hold."""
LIMITS: Final = ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month")
EXPIRY_MARGIN: Final = 60.0
"""Seconds a window's count is kept past its end (instances' clocks differ a little)."""
RESUBSCRIBE: Final = 1.0
"""Seconds between two attempts to follow the changes when Redis does not answer."""


def usage_key(key_id: str) -> str:
    return f"{PREFIX}:keys:usage:{key_id}"


def window_key(key_id: str, counter: str, start: float) -> str:
    return f"{PREFIX}:keys:win:{key_id}:{counter}:{start!r}"


def key_json(key: ClientKey) -> str:
    data = attrs.asdict(key)
    data["models"], data["routes"] = list(key.models), list(key.routes)
    return json.dumps(data, separators=(",", ":"))


def key_of(text: str) -> ClientKey:
    """The key a :func:`key_json` wrote. Raises ValueError, KeyError or TypeError."""
    data = json.loads(text)
    data["models"], data["routes"] = tuple(data["models"]), tuple(data["routes"])
    data["limits"] = Limits(**data["limits"])
    return ClientKey(**data)


_SAVE: Final = """
local taken = redis.call('HGET', KEYS[4], ARGV[3])
if taken and taken ~= ARGV[2] then return -1 end
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old then
  local was = cjson.decode(old)
  if was.revoked_at ~= cjson.null and ARGV[6] == '0' then return -2 end
  if was.name ~= ARGV[3] then redis.call('HDEL', KEYS[4], was.name) end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
local rev = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('PUBLISH', ARGV[1], cjson.encode({id = ARGV[2], rev = rev, key = ARGV[5]}))
return rev
"""

_ADMIT: Final = """
local rev = redis.call('HGET', KEYS[2], ARGV[1])
if rev ~= ARGV[2] then
  return {0, rev or '', redis.call('HGET', KEYS[1], ARGV[1]) or ''}
end
for i = 1, 4 do
  local limit = ARGV[3 + i]
  if ARGV[3] == '1' and limit ~= '' then
    local used = tonumber(redis.call('GET', KEYS[2 + i]) or '0')
    if used >= tonumber(limit) then return {2, i, used} end
  end
end
if ARGV[3] == '1' then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIREAT', KEYS[3], ARGV[8])
end
return {1}
"""

_ADD: Final = """
local u = tonumber(ARGV[1])
local counters = {'requests', 'errors', 'refused', 'cancelled', 'input_tokens', 'output_tokens'}
local a = 2
for i = 1, u do
  local hash, model = KEYS[1 + i], ARGV[a]
  for c = 1, 6 do
    if ARGV[a + c] ~= '0' then
      redis.call('HINCRBY', hash, counters[c] .. ':' .. model, ARGV[a + c])
    end
  end
  local last = ARGV[a + 7]
  if last ~= '' then
    local was = redis.call('HGET', hash, 'last_used:' .. model)
    if not was or tonumber(was) < tonumber(last) then
      redis.call('HSET', hash, 'last_used:' .. model, last)
    end
  end
  a = a + 8
end
for i = 2 + u, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[a])
  redis.call('PEXPIREAT', KEYS[i], ARGV[a + 1])
  a = a + 2
end
return redis.call('INCR', KEYS[1])
"""

_LOOK_UP: Final = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return {} end
return {id, redis.call('HGET', KEYS[2], id) or '', redis.call('HGET', KEYS[3], id) or ''}
"""


@contextlib.contextmanager
def _failures(what: str) -> Iterator[None]:
    """:func:`~nfrx.cluster.store.translated`, and its failure as the store's."""
    try:
        with translated(what):
            yield
    except ClusterUnavailable as exc:
        raise StoreError(f"Redis: {exc}") from exc


@attrs.frozen
class Admission:
    """What :meth:`RedisKeyStore.admit` found."""

    stale: bool = False
    """The caller's revision was not the stored one: nothing was checked or counted."""
    key: ClientKey | None = None
    """When stale: the stored key (None: Redis has no such key any more)."""
    revision: int = 0
    """When stale: the stored key's revision."""
    refused: str | None = None
    """The limit (:data:`LIMITS`) whose window is full; nothing was counted."""


@attrs.frozen
class Totals:
    """The gateway's usage of some keys, as Redis holds it (:meth:`RedisKeyStore.totals`)."""

    usage: dict[str, dict[str, UsageCounts]] | None
    """Key id -> model -> totals; None when not read (nothing changed)."""
    windows: dict[str, dict[str, tuple[float, int]]]
    """Key id -> :data:`WINDOWS` name -> (start, count) of the windows current when read."""


class RedisKeyStore:
    """A :class:`~nfrx.plugins.keys.store.KeyStore` in the Redis of ``REDIS_URL`` (see the
    module docstring), with what several instances need besides: atomic admission
    (:meth:`admit`), shared totals (:meth:`totals`), and change notices: :attr:`on_change` is
    called for each key another instance (or this one) changed, :attr:`on_keys` with every key
    each time the subscription starts (a change may have been missed meanwhile)."""

    def __init__(self, redis_url: str, rate_window: float) -> None:
        from nfrx.cluster.address import parse

        self.address = parse(redis_url)
        self.rate_window = rate_window
        self.on_change: Callable[[ClientKey, int], None] = lambda key, revision: None
        self.on_keys: Callable[[list[tuple[ClientKey, int]]], None] = lambda keys: None
        self.seq: int | None = None
        """The usage sequence :meth:`totals` last read (None: not read yet)."""
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._subscribed = trio.Event()

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise StoreError("the key store is not running")
        return self._client

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the client and follow the changes until cancelled. Usable at once (Redis may
        still be unreachable: every call then raises StoreError)."""
        from nfrx.cluster.address import connect

        coredis_log = logging.getLogger("coredis")
        coredis_log.setLevel(logging.WARNING)  # as the cluster does: its retries are noise
        if not any(isinstance(f, CancelledNoise) for f in coredis_log.filters):
            coredis_log.addFilter(CancelledNoise())
        client = connect(self.address)
        async with client:
            self._scripts = {
                name: client.register_script(text)
                for name, text in (
                    ("save", _SAVE),
                    ("admit", _ADMIT),
                    ("add", _ADD),
                    ("look_up", _LOOK_UP),
                )
            }
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow_changes, client)
                    task_status.started()
            finally:
                self._client = None

    # -- changes -------------------------------------------------------------------------------

    async def _follow_changes(self, client: Any) -> None:
        while True:
            try:
                with translated("key changes", math.inf):
                    async with client.pubsub(
                        channels=[CHANGED], ignore_subscribe_messages=True, retry_policy=None
                    ) as pubsub:
                        self.on_keys(await self.keys())
                        self._subscribed.set()
                        async for message in pubsub:
                            self._changed(message.get("data"))
            except (ClusterUnavailable, StoreError) as exc:
                log.debug("client key changes not followed: %s", exc)
            await trio.sleep(RESUBSCRIBE)

    def _changed(self, data: object) -> None:
        try:
            notice = json.loads(str(data))
            key, revision = key_of(notice["key"]), int(notice["rev"])
        except (ValueError, KeyError, TypeError):
            log.warning("a client key change could not be read: %.200r", data)
            return
        self.on_change(key, revision)

    async def subscribed(self) -> None:
        """Return once the changes are followed (tests)."""
        await self._subscribed.wait()

    # -- keys ----------------------------------------------------------------------------------

    async def keys(self) -> list[tuple[ClientKey, int]]:
        """Every key, with its revision."""
        with _failures("client keys read"):
            async with self._redis.pipeline(transaction=True) as pipe:
                texts = pipe.hgetall(KEYS)
                revisions = pipe.hgetall(REVISIONS)
            by_id, revs = await texts, await revisions
        found = []
        for key_id, text in by_id.items():
            try:
                found.append((key_of(text), int(revs.get(key_id, 0))))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("client key %s in Redis cannot be read: %r", key_id, exc)
        return sorted(found, key=lambda pair: pair[0].created_at)

    async def save(self, key: ClientKey) -> int:
        """Write ``key`` and tell the instances; its new revision. Raises NameTaken, KeyRevoked
        (another instance revoked it), StoreError."""
        from nfrx.plugins.keys.service import KeyRevoked, NameTaken

        args = [
            CHANGED,
            key.id,
            key.name,
            key.digest,
            key_json(key),
            "1" if key.revoked_at is not None else "0",
        ]
        with _failures("client key write"):
            revision = int(
                await self._scripts["save"](keys=[KEYS, REVISIONS, DIGESTS, NAMES], args=args)
            )
        if revision == -1:
            raise NameTaken(key.name)
        if revision == -2:
            raise KeyRevoked(key.name)
        return revision

    async def save_key(self, key: ClientKey) -> None:
        await self.save(key)

    async def look_up(self, digest: str) -> tuple[ClientKey, int] | None:
        """The key whose secret has the SHA-256 ``digest`` and its revision, or None."""
        with _failures("client key lookup"):
            found = await self._scripts["look_up"](keys=[DIGESTS, KEYS, REVISIONS], args=[digest])
        if not found or not found[1]:
            return None
        return key_of(found[1]), int(found[2] or 0)

    # -- admission -----------------------------------------------------------------------------

    def _windows(self, key_id: str, now: float) -> list[tuple[str, float, float]]:
        """(Redis key, start, end) of the four :data:`WINDOWS` current at ``now``."""
        out = []
        for name in WINDOWS:
            period = MINUTE if name == "req" else name
            start = window_start(period, now, self.rate_window)
            end = window_end(period, start, self.rate_window)
            out.append((window_key(key_id, name, start), start, end))
        return out

    async def admit(self, key: ClientKey, revision: int, *, count: bool, now: float) -> Admission:
        """Run ``ADMIT`` for ``key`` at ``now`` (see the module docstring)."""
        windows = self._windows(key.id, now)
        limits = key.limits.view()
        args = [
            key.id,
            str(revision),
            "1" if count else "0",
            *("" if limits[name] is None else str(limits[name]) for name in LIMITS),
            str(_expiry_ms(windows[0][2])),
        ]
        with _failures("client key admission"):
            reply = await self._scripts["admit"](
                keys=[KEYS, REVISIONS, *(w[0] for w in windows)], args=args
            )
        if int(reply[0]) == 0:
            text, stored = reply[2], reply[1]
            return Admission(
                stale=True, key=key_of(text) if text else None, revision=int(stored or 0)
            )
        if int(reply[0]) == 2:
            return Admission(refused=LIMITS[int(reply[1]) - 1])
        return Admission()

    # -- usage ---------------------------------------------------------------------------------

    async def add_usage(
        self, usage: Mapping[UsageKey, UsageCounts], windows: Mapping[WindowKey, int]
    ) -> None:
        """Add usage deltas (per key and model) and token deltas (per key, period -- ``minute``,
        ``day`` or ``month`` -- and window start) in one ``ADD``."""
        keys: list[str] = [USAGE_SEQ]
        args: list[str] = [str(len(usage))]
        for (key_id, model), delta in usage.items():
            keys.append(usage_key(key_id))
            args += [model, *(str(getattr(delta, name)) for name in COUNTERS)]
            args.append("" if delta.last_used is None else repr(delta.last_used))
        for (key_id, period, start), tokens in windows.items():
            keys.append(window_key(key_id, period, start))
            args += [str(tokens), str(_expiry_ms(window_end(period, start, self.rate_window)))]
        with _failures("client key usage write"):
            await self._scripts["add"](keys=keys, args=args)

    async def totals(self, key_ids: list[str], now: float, *, usage: bool = False) -> Totals:
        """The current windows of ``key_ids`` at ``now``, and their usage when ``usage`` is
        true or the usage sequence moved since the last read (something was added somewhere).
        One round trip, two when the usage is read."""
        windows = {key_id: self._windows(key_id, now) for key_id in key_ids}
        names = [w[0] for ws in windows.values() for w in ws]
        with _failures("client key usage read"):
            async with self._redis.pipeline(transaction=False) as pipe:
                seq = pipe.get(USAGE_SEQ)
                values = pipe.mget(names) if names else None
            seq_now = int(await seq or 0)
            counts = list(await values) if values is not None else []
            read: dict[str, dict[str, UsageCounts]] | None = None
            if usage or seq_now != self.seq:
                async with self._redis.pipeline(transaction=False) as pipe:
                    hashes = {key_id: pipe.hgetall(usage_key(key_id)) for key_id in key_ids}
                read = {key_id: _usage_of(await pending) for key_id, pending in hashes.items()}
                self.seq = seq_now
        found: dict[str, dict[str, tuple[float, int]]] = {}
        index = 0
        for key_id, ws in windows.items():
            found[key_id] = {}
            for name, (_, start, _) in zip(WINDOWS, ws, strict=True):
                found[key_id][name] = (start, int(counts[index] or 0))
                index += 1
        return Totals(usage=read, windows=found)

    async def load(self) -> Loaded:
        """Every key and its usage (the current windows are read by :meth:`totals`)."""
        keys = [key for key, _ in await self.keys()]
        totals = await self.totals([key.id for key in keys], 0.0, usage=True)
        usage = {
            (key_id, model): counts
            for key_id, by_model in (totals.usage or {}).items()
            for model, counts in by_model.items()
        }
        return Loaded(keys, usage, {})


def _expiry_ms(end: float) -> int:
    return int((end + EXPIRY_MARGIN) * 1000)


def _usage_of(fields: Mapping[str, str]) -> dict[str, UsageCounts]:
    """A usage hash (see the module docstring) as model -> totals."""
    out: dict[str, UsageCounts] = {}
    for field, value in fields.items():
        counter, _, model = field.partition(":")
        counts = out.setdefault(model, UsageCounts())
        try:
            if counter == "last_used":
                counts.last_used = float(value)
            elif counter in COUNTERS:
                setattr(counts, counter, int(value))
        except ValueError:
            continue
    return out
