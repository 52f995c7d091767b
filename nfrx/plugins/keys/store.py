"""Where client keys and their usage are kept: the :class:`KeyStore` interface.

The service (:mod:`.service`) holds every key, counter and window in memory and decides
admissions there, without I/O; a store only loads that state at start and persists changes:

* :meth:`KeyStore.save_key` -- a key created, changed or revoked; awaited before the admin is
  answered, so an acknowledged change is durable;
* :meth:`KeyStore.add_usage` -- batched usage deltas (per key and model) and token-window deltas
  (per key, ``day`` or ``month``, window start), written every second or so and at shutdown.

Implementations: :class:`~nfrx.plugins.keys.sqlite_store.SqliteKeyStore` (the embedded default),
:class:`~nfrx.plugins.keys.redis_store.RedisKeyStore` (``REDIS_URL``: several instances; it
does more than this interface, for :mod:`nfrx.plugins.keys.shared`) and :class:`MemoryKeyStore`
(tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nfrx.plugins.keys.model import ClientKey

UsageKey = tuple[str, str]
"""(key id, model); the model is ``-`` for requests without one (refused, jobs, MCP errors)."""

WindowKey = tuple[str, str, float]
"""(key id, period: ``day`` or ``month``, window start in Unix seconds)."""


class StoreError(Exception):
    """The store failed (disk full, file unreadable, ...); the message says how."""


@attrs.define
class UsageCounts:
    """Usage of one key with one model: totals, or a delta not yet stored."""

    requests: int = 0
    errors: int = 0
    refused: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    last_used: float | None = None
    """Unix seconds of the last request (None: never)."""

    def add(self, other: UsageCounts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.refused += other.refused
        self.cancelled += other.cancelled
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        if other.last_used is not None and (
            self.last_used is None or other.last_used > self.last_used
        ):
            self.last_used = other.last_used


@attrs.frozen
class Loaded:
    """Everything a store holds, as :meth:`KeyStore.load` returns it."""

    keys: list[ClientKey]
    usage: dict[UsageKey, UsageCounts]
    windows: dict[WindowKey, int]


class KeyStore(Protocol):
    """See the module docstring. Methods raise :class:`StoreError`."""

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Own the store's resources (a thread, connections) until cancelled; usable once
        started."""
        ...

    async def load(self) -> Loaded: ...

    async def save_key(self, key: ClientKey) -> None: ...

    async def add_usage(
        self, usage: Mapping[UsageKey, UsageCounts], windows: Mapping[WindowKey, int]
    ) -> None: ...


class MemoryKeyStore:
    """A :class:`KeyStore` in memory (tests); :attr:`fail` makes every write raise."""

    def __init__(self) -> None:
        self.keys: dict[str, ClientKey] = {}
        self.usage: dict[UsageKey, UsageCounts] = {}
        self.windows: dict[WindowKey, int] = {}
        self.fail = False
        self.writes = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def load(self) -> Loaded:
        await trio.lowlevel.checkpoint()
        usage = {k: attrs.evolve(v) for k, v in self.usage.items()}
        return Loaded(list(self.keys.values()), usage, dict(self.windows))

    def _write(self) -> None:
        if self.fail:
            raise StoreError("the test store refuses writes")
        self.writes += 1

    async def save_key(self, key: ClientKey) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        self.keys[key.id] = key

    async def add_usage(
        self, usage: Mapping[UsageKey, UsageCounts], windows: Mapping[WindowKey, int]
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._write()
        for key, delta in usage.items():
            self.usage.setdefault(key, UsageCounts()).add(delta)
        for window, tokens in windows.items():
            self.windows[window] = self.windows.get(window, 0) + tokens
