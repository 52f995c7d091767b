"""The client keys of one gateway, in memory: admission, usage, admin changes and persistence.

**Hot path, no I/O.** Every key, its live windows (:class:`~.limits.Meter`) and its usage totals
are in memory; :meth:`KeysService.admit` (a presented key, from the gateway's admission),
:meth:`KeysService.admit_model`, and the exchange and request listeners read and write only that.
A presented token is looked up by its SHA-256 (:mod:`.model`); tokens without the ``nfrx-``
prefix are not hashed at all.
With ``REDIS_URL`` the service is :class:`~.shared.SharedKeysService`: the same maps as a copy of
what Redis holds, and one Redis call per keyed request before it is admitted (:mod:`.shared`).

**Usage.** A request admitted or refused for a key adds one to the key's row for the model of its
last exchange (``-`` without one; at most :data:`MAX_MODELS_PER_KEY` rows per key, the rest in
``(other)``) when it ends (:class:`~nfrx.server.accounting.RequestRecord`): requests, errors,
refused, cancelled, tokens in and out, last used. Tokens are charged to the key's windows as each
exchange ends, so the next request sees them.

**Persistence.** Admin changes are written through the store and acknowledged after it committed
(:meth:`create`, :meth:`update`, :meth:`revoke`, one at a time); the in-memory key changes only
then -- a revoked key is refused from the moment the admin's call returns. Usage and the day and
month windows are kept as deltas and written in one batch every :data:`FLUSH_INTERVAL` seconds by
:meth:`run`, and once more when :meth:`run` is cancelled (a clean shutdown: nothing is lost). A
failed write keeps its deltas for the next one. A crash (SIGKILL, power loss) loses at most the
last :data:`FLUSH_INTERVAL` seconds of usage and window counts, and every minute window (those
are never stored; a restart forgets them too). Keys are never lost once acknowledged.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.plugins.keys.limits import Meter
from nfrx.plugins.keys.model import (
    ACTIVE,
    DISABLED,
    EXPIRED,
    REVOKED,
    SECRET_PREFIX,
    ClientKey,
    digest_of,
    key_view,
    parse_create,
    parse_update,
    rfc3339,
)
from nfrx.plugins.keys.store import StoreError, UsageCounts
from nfrx.server import accounting
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.config.model import ServerConfig
    from nfrx.plugins.keys.limits import Refusal
    from nfrx.plugins.keys.store import KeyStore, Loaded, UsageKey, WindowKey
    from nfrx.server.accounting import RequestRecord
    from nfrx.server.gateway import Gateway
    from nfrx.server.proxy import Exchange

log = logging.getLogger("nfrx.keys")

FLUSH_INTERVAL: Final = 1.0
"""Seconds between two usage writes (what a crash may lose at most)."""
FLUSH_TIMEOUT: Final = 10.0
"""Seconds the last write at shutdown may take."""
MAX_MODELS_PER_KEY: Final = 100
"""Usage rows one key keeps by model; requests with further models go to :data:`OTHER`."""
NO_MODEL: Final = "-"
OTHER: Final = "(other)"


def user_data_dir() -> Path:
    """``$XDG_DATA_HOME/nfrx`` (``~/.local/share/nfrx``); ``~/Library/Application Support/nfrx``
    on macOS; ``%LOCALAPPDATA%\\nfrx`` on Windows."""
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "nfrx"


def state_dir(config: ServerConfig) -> Path:
    """``STATE_DIR``, or :func:`user_data_dir` when it is empty."""
    return Path(config.state_dir).expanduser() if config.state_dir else user_data_dir()


class KeyNotFound(LookupError):
    """No key has that id or name."""


class NameTaken(ValueError):
    """Another key has that name already (names are never reused: they label metrics)."""


class KeyRevoked(ValueError):
    """A revoked key cannot be changed."""


@attrs.define(eq=False)
class _Entry:
    key: ClientKey
    meter: Meter
    usage: dict[str, UsageCounts] = attrs.field(factory=dict)
    """Model -> totals."""

    def totals(self) -> UsageCounts:
        total = UsageCounts()
        for counts in self.usage.values():
            total.add(counts)
        return total


def usage_view(counts: UsageCounts) -> dict[str, Any]:
    return {
        "requests": counts.requests,
        "errors": counts.errors,
        "refused": counts.refused,
        "cancelled": counts.cancelled,
        "input_tokens": counts.input_tokens,
        "output_tokens": counts.output_tokens,
        "last_used_at": rfc3339(counts.last_used),
    }


def _refused(status: int, code: str, message: str, **kwargs: Any) -> HttpError:
    record = accounting.current()
    if record is not None:
        record.refused = True
    return HttpError(status, code, message, **kwargs)


def _limit_error(key: ClientKey, refusal: Refusal) -> HttpError:
    what = refusal.limit.replace("_", " ")
    return _refused(
        429,
        refusal.code,
        f"the key {key.name!r} reached its limit of {refusal.value} {what}; retry in "
        f"{refusal.retry_after} s",
        type="rate_limit_error" if refusal.code == "rate_limit_exceeded" else refusal.code,
        headers={"Retry-After": str(refusal.retry_after)},
    )


class KeysService:
    """See the module docstring. One per gateway, owned by its keys plugin (:mod:`.plugin`)."""

    def __init__(
        self, gateway: Gateway, store: KeyStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.clock = clock
        """Wall-clock seconds: windows are calendar days and months, expiry a date."""
        self.rate_window = gateway.config.key_rate_window
        self._by_id: dict[str, _Entry] = {}
        self._by_digest: dict[str, _Entry] = {}
        self._usage_delta: dict[UsageKey, UsageCounts] = {}
        self._window_delta: dict[WindowKey, int] = {}
        self._changes = trio.Lock()
        gateway.client_keys = self
        gateway.exchange_listeners.append(self.exchange_ended)
        gateway.request_listeners.append(self.request_ended)

    # -- admission (hot path: memory only) -----------------------------------------------------

    async def prepare(self, token: str | None, route: str | None) -> None:
        """What admission needs that is not in memory, fetched before the request is handled
        (nothing here: everything is; see :mod:`.shared`)."""

    async def refresh(self) -> None:
        """Bring the usage up to date before an admin reads it (nothing here: it is)."""

    def admit(self, token: str | None, route: str) -> bool:
        """See :meth:`nfrx.server.accounting.ClientKeys.admit`."""
        entry = self._entry_of(token)
        if entry is None:
            return False
        now = self.clock()
        self._check_rules(entry.key, route, now)
        refusal = entry.meter.refusal(entry.key.limits, now)
        if refusal is not None:
            raise _limit_error(entry.key, refusal)
        entry.meter.count_request(now)
        return True

    def _entry_of(self, token: str | None) -> _Entry | None:
        """The entry of the key ``token`` is (None: no client key), marked on the request."""
        if token is None or not token.startswith(SECRET_PREFIX):
            return None
        digest = digest_of(token)
        entry = self._by_digest.get(digest)
        if entry is None or not entry.key.matches(digest):
            return None
        record = accounting.current()
        if record is not None:
            record.key = entry.key.id
        return entry

    def _check_rules(self, key: ClientKey, route: str, now: float) -> None:
        """Raise 401 unless ``key`` is active at ``now``, 403 unless it may use ``route``."""
        status = key.status(now)
        if status != ACTIVE:
            raise _refused(
                401,
                f"key_{status}",
                f"the key {key.name!r} is {status}",
                headers={"WWW-Authenticate": 'Bearer realm="nfrx"'},
            )
        if not key.allows_route(route):
            raise _refused(
                403,
                "route_not_allowed",
                f"the key {key.name!r} may not use {route.replace(':', ' relay ')}",
                type="permission_error",
            )

    def _current_key(self) -> ClientKey | None:
        record = accounting.current()
        if record is None or record.key is None:
            return None
        entry = self._by_id.get(record.key)
        return entry.key if entry is not None else None

    def admit_model(self, model: str) -> None:
        key = self._current_key()
        if key is not None and not key.allows_model(model):
            raise _refused(
                403,
                "model_not_allowed",
                f"the key {key.name!r} may not use the model {model!r}",
                type="permission_error",
            )

    def may_use(self, model: str) -> bool:
        key = self._current_key()
        return key is None or key.allows_model(model)

    # -- accounting ----------------------------------------------------------------------------

    def exchange_ended(self, exchange: Exchange) -> None:
        """Charge an exchange's tokens to the windows of its request's key (a gateway exchange
        listener), so that the key's next request sees them."""
        record = accounting.current()
        usage = exchange.usage
        if record is None or record.key is None or usage is None or not usage.total:
            return
        entry = self._by_id.get(record.key)
        if entry is None:
            return
        for period, start in entry.meter.count_tokens(usage.total, self.clock()):
            window = (entry.key.id, period, start)
            self._window_delta[window] = self._window_delta.get(window, 0) + usage.total

    def request_ended(self, record: RequestRecord) -> None:
        """Count a request that ended in its key's usage (a gateway request listener)."""
        entry = self._by_id.get(record.key) if record.key is not None else None
        if entry is None:
            return
        outcome = record.outcome
        delta = UsageCounts(
            requests=1,
            errors=int(outcome == accounting.ERROR),
            refused=int(outcome == accounting.REFUSED),
            cancelled=int(outcome == accounting.CANCELLED),
            input_tokens=record.usage.input_tokens,
            output_tokens=record.usage.output_tokens,
            last_used=self.clock(),
        )
        model = record.model or NO_MODEL
        if model not in entry.usage and len(entry.usage) >= MAX_MODELS_PER_KEY:
            model = OTHER
        entry.usage.setdefault(model, UsageCounts()).add(delta)
        self._usage_delta.setdefault((entry.key.id, model), UsageCounts()).add(delta)
        self.gateway.registry.wake()  # dashboards follow usage

    # -- admin (written through the store) -----------------------------------------------------

    def find(self, ref: str) -> ClientKey:
        """The key with id ``ref``, else the one named ``ref``. Raises KeyNotFound."""
        entry = self._by_id.get(ref)
        if entry is None:
            entry = next((e for e in self._by_id.values() if e.key.name == ref), None)
        if entry is None:
            raise KeyNotFound(ref)
        return entry.key

    def all_keys(self) -> list[ClientKey]:
        """Every key, oldest first (revoked ones too)."""
        return sorted((e.key for e in self._by_id.values()), key=lambda k: k.created_at)

    def _check_name(self, key: ClientKey) -> None:
        for entry in self._by_id.values():
            if entry.key.name == key.name and entry.key.id != key.id:
                raise NameTaken(key.name)

    async def _save(self, key: ClientKey) -> ClientKey:
        await self.store.save_key(key)
        self._install(key)
        self.gateway.registry.wake()
        return key

    async def create(self, body: dict[str, Any]) -> tuple[ClientKey, str]:
        """A new key from an admin's body, and its secret (shown once). Raises InvalidKey,
        NameTaken, StoreError."""
        async with self._changes:
            key, secret = parse_create(body, self.clock())
            self._check_name(key)
            await self._save(key)
        log.info("client key %s (%s, %s...) created", key.name, key.id, key.prefix)
        return key, secret

    async def update(self, ref: str, body: dict[str, Any]) -> ClientKey:
        """The key ``ref`` changed as an admin's body says. Raises KeyNotFound, KeyRevoked,
        InvalidKey, NameTaken, StoreError."""
        async with self._changes:
            key = self.find(ref)
            if key.revoked_at is not None:
                raise KeyRevoked(key.name)
            changed = parse_update(body, key, self.clock())
            self._check_name(changed)
            await self._save(changed)
        log.info("client key %s (%s) updated", changed.name, changed.id)
        return changed

    async def revoke(self, ref: str) -> ClientKey:
        """Revoke the key ``ref`` for good (again: no change). Raises KeyNotFound, StoreError."""
        async with self._changes:
            key = self.find(ref)
            if key.revoked_at is not None:
                return key
            now = self.clock()
            revoked = await self._save(attrs.evolve(key, revoked_at=now, updated_at=now))
        log.info("client key %s (%s) revoked", key.name, key.id)
        return revoked

    def _install(self, key: ClientKey) -> None:
        entry = self._by_id.get(key.id)
        if entry is None:
            entry = self._by_id[key.id] = _Entry(key, Meter(self.rate_window))
        else:
            entry.key = key
        self._by_digest[key.digest] = entry

    # -- views ---------------------------------------------------------------------------------

    def view(self, key: ClientKey, now: float, *, detail: bool = False) -> dict[str, Any]:
        """The key's JSON at ``now`` (:func:`~.model.key_view`) with its usage; ``detail`` adds
        its usage by model and the counts of its current windows."""
        entry = self._by_id[key.id]
        view = key_view(key, now)
        view["usage"] = usage_view(entry.totals())
        if detail:
            view["usage_by_model"] = [
                {"model": model, **usage_view(counts)}
                for model, counts in sorted(entry.usage.items())
            ]
            view["windows"] = entry.meter.view(now)
        return view

    def summary(self, now: float) -> dict[str, int]:
        """How many keys there are, in total and by status."""
        counts = dict.fromkeys((ACTIVE, DISABLED, EXPIRED, REVOKED), 0)
        for entry in self._by_id.values():
            counts[entry.key.status(now)] += 1
        return {"total": len(self._by_id), **counts}

    def state(self, now: float) -> dict[str, Any]:
        """The ``keys`` section of ``/api/state`` at ``now``."""
        return {
            "summary": self.summary(now),
            "keys": [self.view(key, now, detail=True) for key in self.all_keys()],
        }

    def usage_rows(self) -> list[tuple[ClientKey, str, UsageCounts]]:
        """(key, model, totals) for every key, oldest key first (for metrics)."""
        return [
            (entry.key, model, counts)
            for entry in sorted(self._by_id.values(), key=lambda e: e.key.created_at)
            for model, counts in sorted(entry.usage.items())
        ]

    # -- background work -----------------------------------------------------------------------

    def _restore(self, loaded: Loaded) -> None:
        for key in loaded.keys:
            self._install(key)
        now = self.clock()
        for (key_id, model), counts in loaded.usage.items():
            entry = self._by_id.get(key_id)
            if entry is not None:
                entry.usage[model] = counts
        for (key_id, period, start), used in loaded.windows.items():
            entry = self._by_id.get(key_id)
            if entry is not None:
                entry.meter.restore(period, start, used, now)

    async def _load(self) -> None:
        self._restore(await self.store.load())
        if self._by_id:
            log.info("%d client key(s) loaded", len(self._by_id))

    async def _flush_loop(self) -> None:
        while True:
            await trio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def flush(self) -> None:
        """Write the usage and window deltas gathered since the last call (kept for the next
        call if the store fails)."""
        if not self._usage_delta and not self._window_delta:
            return
        usage, windows = self._usage_delta, self._window_delta
        self._usage_delta, self._window_delta = {}, {}
        try:
            await self.store.add_usage(usage, windows)
        except StoreError as exc:
            log.warning("client key usage not written (kept for the next try): %s", exc)
            for row, delta in usage.items():
                self._usage_delta.setdefault(row, UsageCounts()).add(delta)
            for window, tokens in windows.items():
                self._window_delta[window] = self._window_delta.get(window, 0) + tokens

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the store, load the keys, then write usage every :data:`FLUSH_INTERVAL` until
        cancelled, and once more after (bounded by :data:`FLUSH_TIMEOUT`) before the store
        stops. Started once the keys are loaded; raises StoreError if they cannot be."""
        async with trio.open_nursery() as nursery:
            # Shielded: the store must outlive the last write, whatever cancelled this task.
            store_scope = trio.CancelScope(shield=True)

            async def run_store(*, task_status: trio.TaskStatus[None]) -> None:
                with store_scope:
                    await self.store.run(task_status=task_status)

            await nursery.start(run_store)
            try:
                await self._load()
                task_status.started()
                await self._flush_loop()
            finally:
                with trio.move_on_after(FLUSH_TIMEOUT, shield=True):
                    await self.flush()
                store_scope.cancel()
