"""The client keys of several instances (``REDIS_URL``): one set of keys, limits and usage.

The Redis store (:mod:`.redis_store`) holds the keys, every window and the usage; each instance
keeps a copy of the keys in memory (the maps of :class:`~.service.KeysService`), and of the
usage for its views.

**Keys: cached, followed, and checked per request.** Each change is published by the script that
writes it; every instance installs the key it is told of (a subscription, read whole again each
time it starts, so a notice missed meanwhile is not lost). The copy may lag a change by the
time a notice takes to arrive (about a millisecond on a LAN), and by as long as Redis is
unreachable. Admission does not rely on it: each request that presents a client key on a client
route costs one ``ADMIT`` (:meth:`SharedKeysService.prepare`), which compares the key's revision
with the stored one. A key changed anywhere -- revoked, disabled, given other rules or limits --
is therefore seen by the very next request on every instance: when the revision differs, the
script returns the stored key, it is installed, and admission runs again on it. A secret this
instance does not know is looked up (``LOOK_UP``): a key created through another instance works
at once; an unknown secret costs that lookup.

**Limits.** ``ADMIT`` also reads the key's windows (requests and tokens this minute, tokens
today and this month) and, if none is full and the key is active and may use the route, counts
the request -- one atomic step for the whole gateway: a key allowed N requests per window gets
exactly N through, whichever instances they reach. Admission itself does no I/O
(:meth:`nfrx.server.gateway.Gateway.admit` and the plugins' own checks are synchronous), so
:meth:`prepare` runs before the request is handled (a before-request hook of the keys plugin)
and leaves its verdict for :meth:`admit`. A request counted there but refused before it reaches
admission (draining, an MCP relay's Host or Origin check) stays counted.

**Tokens and usage** are written behind: usage rows as deltas, as with one instance, and the
tokens of an exchange to its minute, day and month windows, in one ``ADD`` as soon as an
exchange with tokens ended (more batch up while a write is under way) and at least every
:data:`~.service.FLUSH_INTERVAL`. A request admitted between an exchange's end and that write
may pass a token limit once more -- as an answer that crosses a budget is let finish with one
instance. Every :data:`~.service.FLUSH_INTERVAL`, and before the admin API lists or shows keys,
the instance reads the gateway's totals (when some instance wrote usage since) and the current
windows, and adds what it has not written yet: ``/api/state``, the dashboard, the metrics and
``nfrx keys`` show the whole gateway's usage on any instance (the metrics are the gateway's
totals on every instance: do not sum them over instances).

**Redis unreachable.** A request with a key that has limits is refused 503
``key_store_unavailable`` (``Retry-After: 1``): the limits cannot be checked. A key without
limits is admitted as this instance last knew it (said once in the log per outage). A secret
this instance does not know is refused 503 too. After a failure, requests do not wait for Redis
for :data:`BACKOFF` seconds (each call is bounded by :data:`nfrx.cluster.store.TIMEOUT`). Admin
changes are refused 503 ``store_unavailable``; usage is kept and written when Redis answers.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Final

import attrs
import trio

from nfrx.plugins.keys.limits import DAY, MINUTE, MONTH, Refusal, Window, window_end
from nfrx.plugins.keys.limits import window_start as start_of
from nfrx.plugins.keys.model import ACTIVE, SECRET_PREFIX, ClientKey, Limits, digest_of
from nfrx.plugins.keys.redis_store import RedisKeyStore
from nfrx.plugins.keys.service import FLUSH_INTERVAL, KeysService, _limit_error
from nfrx.plugins.keys.store import StoreError, UsageCounts
from nfrx.server import accounting
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.plugins.keys.redis_store import Totals
    from nfrx.server.accounting import RequestRecord
    from nfrx.server.gateway import Gateway
    from nfrx.server.proxy import Exchange

log = logging.getLogger("nfrx.keys")

BACKOFF: Final = 1.0
"""Seconds after a failed Redis call during which requests with a key do not try Redis."""
STALE_TRIES: Final = 3
"""Times admission takes a newer key and tries again before it gives up (503)."""
PERIODS: Final = {
    "requests_per_minute": MINUTE,
    "tokens_per_minute": MINUTE,
    "tokens_per_day": DAY,
    "tokens_per_month": MONTH,
}


@attrs.frozen
class Prepared:
    """What :meth:`SharedKeysService.prepare` found for one request."""

    digest: str
    route: str
    now: float
    refused: str | None = None
    """The limit whose window is full (nothing was counted)."""
    unavailable: str | None = None
    """Why Redis could not be asked (nothing was checked)."""


def _unavailable(key: ClientKey | None, why: str) -> HttpError:
    what = f"the key {key.name!r} has limits, which" if key else "client keys, which"
    return HttpError(
        503,
        "key_store_unavailable",
        f"{what} are kept in the gateway's Redis, cannot be checked now (Redis does not "
        "answer); retry shortly",
        headers={"Retry-After": "1"},
        detail=why,
    )


class SharedKeysService(KeysService):
    """See the module docstring; ``store`` is the Redis store."""

    store: RedisKeyStore

    def __init__(
        self, gateway: Gateway, store: RedisKeyStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(gateway, store, clock=clock)
        self._revisions: dict[str, int] = {}
        self._prepared: weakref.WeakKeyDictionary[RequestRecord, Prepared] = (
            weakref.WeakKeyDictionary()
        )
        self._down_until = -math.inf
        self._down_reason = ""
        self._said_down = False
        self._flush_soon = trio.Event()
        self._usage_lock = trio.Lock()
        """Held by a write of usage and a read of the totals: a read never misses a write
        under way."""
        store.on_change = self._key_changed
        store.on_keys = self._keys_read

    @classmethod
    def of_redis(cls, gateway: Gateway) -> SharedKeysService:
        config = gateway.config
        return cls(gateway, RedisKeyStore(config.redis_url, config.key_rate_window))

    # -- keys ----------------------------------------------------------------------------------

    def _key_changed(self, key: ClientKey, revision: int, *, force: bool = False) -> None:
        """Install ``key`` unless this instance has a newer revision (``force``: Redis is the
        truth even when older -- it lost data)."""
        if not force and revision <= self._revisions.get(key.id, 0):
            return
        old = self._by_id.get(key.id)
        if old is not None and old.key.digest != key.digest:
            self._by_digest.pop(old.key.digest, None)
        self._install(key)
        self._revisions[key.id] = revision
        self.gateway.registry.wake()

    def _keys_read(self, keys: list[tuple[ClientKey, int]]) -> None:
        for key, revision in keys:
            self._key_changed(key, revision)

    def _forget(self, key: ClientKey) -> None:
        """Redis has no such key any more (it lost it): neither has this instance."""
        self._by_id.pop(key.id, None)
        self._by_digest.pop(key.digest, None)
        self._revisions.pop(key.id, None)
        log.warning("client key %s (%s) is gone from Redis: forgotten", key.name, key.id)

    async def _save(self, key: ClientKey) -> ClientKey:
        revision = await self.store.save(key)
        self._key_changed(key, revision)  # unless a later change was heard of meanwhile
        return key

    async def _load(self) -> None:
        try:
            keys = await self.store.keys()
        except StoreError as exc:
            log.warning("client keys not loaded (%s): they are read once Redis answers", exc)
            return
        self._keys_read(keys)
        if self._by_id:
            log.info("%d client key(s) loaded from Redis", len(self._by_id))
        await self.refresh()

    # -- admission -----------------------------------------------------------------------------

    async def prepare(self, token: str | None, route: str | None) -> None:
        """Check the key ``token`` in Redis for the current request, on ``route``, and count
        it (see the module docstring); the verdict waits for :meth:`admit`. Never raises for
        Redis's sake: its failure is the verdict."""
        record = accounting.current()
        if record is None or route is None or token is None:
            return
        if not token.startswith(SECRET_PREFIX):
            return
        digest = digest_of(token)
        now = self.clock()
        prepared: Prepared | None
        if trio.current_time() < self._down_until:
            prepared = Prepared(digest, route, now, unavailable=self._down_reason)
        else:
            try:
                prepared = await self._check(digest, route, now)
            except StoreError as exc:
                self._down(str(exc))
                prepared = Prepared(digest, route, now, unavailable=str(exc))
        if prepared is not None:
            self._prepared[record] = prepared

    async def _check(self, digest: str, route: str, now: float) -> Prepared | None:
        entry = self._by_digest.get(digest)
        if entry is None or not entry.key.matches(digest):
            found = await self.store.look_up(digest)
            if found is None:
                self._up()
                return None  # no client key: admission says so
            self._key_changed(*found, force=True)
            entry = self._by_digest[digest]
        for _ in range(STALE_TRIES):
            key = entry.key
            count = key.status(now) == ACTIVE and key.allows_route(route)
            revision = self._revisions.get(key.id, 0)
            admission = await self.store.admit(key, revision, count=count, now=now)
            self._up()
            if not admission.stale:
                return Prepared(digest, route, now, refused=admission.refused)
            if admission.key is None:
                self._forget(key)
                return None
            self._key_changed(admission.key, admission.revision, force=True)
            entry = self._by_id[key.id]
        raise StoreError(f"the key {entry.key.name!r} kept changing while it was checked")

    def _down(self, why: str) -> None:
        self._down_until = trio.current_time() + BACKOFF
        self._down_reason = why
        if not self._said_down:
            self._said_down = True
            log.warning(
                "client keys: %s: keys with limits are refused (503) and keys without are "
                "admitted as this instance last knew them, until Redis answers",
                why,
            )

    def _up(self) -> None:
        self._down_until = -math.inf
        if self._said_down:
            self._said_down = False
            log.info("client keys: Redis answers again")

    def admit(self, token: str | None, route: str) -> bool:
        """The verdict :meth:`prepare` left for this request, with this instance's copy of the
        key (just brought up to date) for its status and routes. Without a verdict (a check
        outside the request's route, a test): the limits are counted by this instance alone."""
        if token is None or not token.startswith(SECRET_PREFIX):
            return False
        record = accounting.current()
        prepared = self._prepared.get(record) if record is not None else None
        if prepared is None or prepared.route != route or prepared.digest != digest_of(token):
            return super().admit(token, route)
        entry = self._entry_of(token)
        if entry is None:
            if prepared.unavailable is not None:
                raise _unavailable(None, prepared.unavailable)
            return False
        key = entry.key
        self._check_rules(key, route, self.clock())
        if prepared.unavailable is not None:
            if key.limits != Limits():
                raise _unavailable(key, prepared.unavailable)
            return True
        if prepared.refused is not None:
            raise _limit_error(key, self._refusal(key, prepared.refused, prepared.now))
        return True

    def _refusal(self, key: ClientKey, limit: str, now: float) -> Refusal:
        period = PERIODS[limit]
        end = window_end(period, start_of(period, now, self.rate_window), self.rate_window)
        value: int = getattr(key.limits, limit)
        return Refusal(limit, value, max(1, math.ceil(end - now)))

    # -- usage ---------------------------------------------------------------------------------

    def exchange_ended(self, exchange: Exchange) -> None:
        """Charge an exchange's tokens to its key's minute, day and month windows: here at
        once (this instance's view), in Redis by the next write, which this asks for now."""
        record = accounting.current()
        usage = exchange.usage
        if record is None or record.key is None or usage is None or not usage.total:
            return
        entry = self._by_id.get(record.key)
        if entry is None:
            return
        now = self.clock()
        entry.meter.count_tokens(usage.total, now)
        for period in (MINUTE, DAY, MONTH):
            window = (entry.key.id, period, start_of(period, now, self.rate_window))
            self._window_delta[window] = self._window_delta.get(window, 0) + usage.total
        self._flush_soon.set()

    async def _flush_loop(self) -> None:
        """Write as soon as an exchange charged tokens (while a write is under way, more batch
        up) or every :data:`FLUSH_INTERVAL`; read the totals every :data:`FLUSH_INTERVAL`."""
        read_at = trio.current_time()
        while True:
            with trio.move_on_after(max(0.0, read_at + FLUSH_INTERVAL - trio.current_time())):
                await self._flush_soon.wait()
            self._flush_soon = trio.Event()
            await self.flush()
            if trio.current_time() >= read_at + FLUSH_INTERVAL:
                await self.refresh()
                read_at = trio.current_time()

    async def flush(self) -> None:
        async with self._usage_lock:
            await super().flush()

    async def refresh(self) -> None:
        """Read the gateway's totals and current windows into this instance's view (see the
        module docstring); on failure the view stays as it was."""
        async with self._usage_lock:
            try:
                totals = await self.store.totals(list(self._by_id), self.clock())
            except StoreError as exc:
                log.debug("client key usage not read: %s", exc)
                return
            self._apply(totals)

    def _apply(self, totals: Totals) -> None:
        unwritten: dict[str, dict[str, UsageCounts]] = {}
        for (key_id, model), delta in self._usage_delta.items():
            unwritten.setdefault(key_id, {})[model] = delta
        for key_id, entry in self._by_id.items():
            if totals.usage is not None and key_id in totals.usage:
                usage = totals.usage[key_id]
                for model, delta in unwritten.get(key_id, {}).items():
                    usage.setdefault(model, UsageCounts()).add(delta)
                entry.usage = usage
            windows = totals.windows.get(key_id)
            if windows is None:
                continue
            start, used = windows["req"]
            entry.meter.requests = Window(start, used)
            for period in (MINUTE, DAY, MONTH):
                start, used = windows[period]
                used += self._window_delta.get((key_id, period, start), 0)
                entry.meter.tokens[period] = Window(start, used)
        if totals.usage is not None:
            self.gateway.registry.wake()  # dashboards follow the gateway's usage
