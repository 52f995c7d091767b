"""The embedded key store: one SQLite file, ``keys.db`` in ``STATE_DIR``, used from one thread.

**Threads.** SQLite calls block, so none runs on the event loop's thread. :meth:`run` starts one
dedicated thread that owns the connection -- opened there and used only there (sqlite3's
``check_same_thread`` stays on) -- and runs jobs one at a time, in the order they were submitted;
a coroutine submits a job and waits for its outcome (:meth:`SqliteKeyStore._call`). A caller
cancelled while it waits does not stop its job: a write that was submitted is done. When
:meth:`run` is cancelled, the thread finishes the jobs already submitted, closes the connection and
exits; that wait is bounded by :data:`CLOSE_TIMEOUT`, after which the (daemon) thread is left.

**Durability.** WAL journal with ``synchronous=FULL``: a committed transaction survives the crash
of the process and of the machine. Each :meth:`save_key` is one transaction, each
:meth:`add_usage` one transaction for its whole batch.

**Files.** The database is created by the first write (its directory with mode 0700, the file
0600); until then :meth:`load` finds nothing and nothing is written: a server whose admin never
creates a key leaves no file behind. The schema's version is ``PRAGMA user_version``; a file
from a newer nfrx is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from nfrx.plugins.keys.model import ClientKey, Limits
from nfrx.plugins.keys.store import Loaded, StoreError, UsageCounts

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from nfrx.plugins.keys.store import UsageKey, WindowKey

T = TypeVar("T")

log = logging.getLogger("nfrx.keys")

FILE_NAME: Final = "keys.db"
CLOSE_TIMEOUT: Final = 10.0
"""Seconds :meth:`SqliteKeyStore.run` waits, when cancelled, for its thread to finish."""
SCHEMA_VERSION: Final = 1
WINDOW_RETENTION: Final = 40 * 86400.0
"""Seconds after which a stored day or month window is deleted (none is current any more)."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    enabled INTEGER NOT NULL,
    models TEXT NOT NULL,
    routes TEXT NOT NULL,
    limits TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    refused INTEGER NOT NULL,
    cancelled INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    last_used REAL,
    PRIMARY KEY (key_id, model)
);
CREATE TABLE IF NOT EXISTS windows (
    key_id TEXT NOT NULL,
    period TEXT NOT NULL,
    start REAL NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (key_id, period, start)
);
"""

_SAVE_KEY: Final = """
INSERT INTO keys (id, name, prefix, digest, created_at, updated_at, expires_at, revoked_at,
                  enabled, models, routes, limits)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name, updated_at = excluded.updated_at, expires_at = excluded.expires_at,
    revoked_at = excluded.revoked_at, enabled = excluded.enabled, models = excluded.models,
    routes = excluded.routes, limits = excluded.limits
"""

_ADD_USAGE: Final = """
INSERT INTO usage (key_id, model, requests, errors, refused, cancelled, input_tokens,
                   output_tokens, last_used)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key_id, model) DO UPDATE SET
    requests = requests + excluded.requests,
    errors = errors + excluded.errors,
    refused = refused + excluded.refused,
    cancelled = cancelled + excluded.cancelled,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    last_used = CASE
        WHEN excluded.last_used IS NULL THEN last_used
        WHEN last_used IS NULL OR excluded.last_used > last_used THEN excluded.last_used
        ELSE last_used END
"""

_ADD_WINDOW: Final = """
INSERT INTO windows (key_id, period, start, used) VALUES (?, ?, ?, ?)
ON CONFLICT (key_id, period, start) DO UPDATE SET used = used + excluded.used
"""


def _key_row(key: ClientKey) -> tuple[object, ...]:
    return (
        key.id,
        key.name,
        key.prefix,
        key.digest,
        key.created_at,
        key.updated_at,
        key.expires_at,
        key.revoked_at,
        int(key.enabled),
        json.dumps(list(key.models)),
        json.dumps(list(key.routes)),
        json.dumps(key.limits.view()),
    )


def _key_of(row: sqlite3.Row) -> ClientKey:
    return ClientKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        digest=row["digest"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        enabled=bool(row["enabled"]),
        models=tuple(json.loads(row["models"])),
        routes=tuple(json.loads(row["routes"])),
        limits=Limits(**json.loads(row["limits"])),
    )


class SqliteKeyStore:
    """A :class:`~nfrx.plugins.keys.store.KeyStore` in the SQLite file ``path`` (see the module
    docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._running = False
        self._conn: sqlite3.Connection | None = None
        """Opened, used and closed by the store's thread only."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        exited = trio.Event()

        def deliver(result: Any) -> None:  # an outcome.Outcome of _serve
            if getattr(result, "error", None) is not None:
                log.error("the key store's thread failed: %r", result.error)
            with contextlib.suppress(trio.RunFinishedError):  # the run ended: nobody waits
                token.run_sync_soon(exited.set)

        trio.lowlevel.start_thread_soon(self._serve, deliver, name="nfrx keys store")
        self._running = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._running = False
            self._jobs.put(None)
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True) as waited:
                await exited.wait()
            if waited.cancelled_caught:
                log.warning("the key store's thread did not finish within %g s", CLOSE_TIMEOUT)

    def _serve(self) -> None:
        """The store's thread: run jobs until the ``None`` that :meth:`run` sends at its end."""
        try:
            while (job := self._jobs.get()) is not None:
                job()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _call(self, job: Callable[[], T]) -> T:
        """Run ``job`` on the store's thread and return its result; sqlite and OS errors are
        raised as :class:`StoreError`."""
        if not self._running:
            raise StoreError("the key store is not running")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        results: list[T] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                results.append(job())
            except BaseException as exc:  # handed to the caller, raised there
                errors.append(exc)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        self._jobs.put(run)
        await done.wait()
        if not errors:
            return results[0]
        try:
            raise errors[0]
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"key store {self.path}: {exc}") from exc

    # -- on the store's thread -----------------------------------------------------------------

    def _db(self, *, create: bool) -> sqlite3.Connection | None:
        """The connection (opened on first use); None when the file does not exist and
        ``create`` is false."""
        if self._conn is not None:
            return self._conn
        if not create and not self.path.exists():
            return None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} was written by a newer nfrx (this one reads "
                    f"{SCHEMA_VERSION})"
                )
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _transaction(self, statements: Callable[[sqlite3.Connection], None]) -> None:
        conn = self._db(create=True)
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            statements(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _load(self) -> Loaded:
        conn = self._db(create=False)
        if conn is None:
            return Loaded([], {}, {})
        keys = [_key_of(row) for row in conn.execute("SELECT * FROM keys ORDER BY created_at")]
        usage = {
            (row["key_id"], row["model"]): UsageCounts(
                requests=row["requests"],
                errors=row["errors"],
                refused=row["refused"],
                cancelled=row["cancelled"],
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                last_used=row["last_used"],
            )
            for row in conn.execute("SELECT * FROM usage")
        }
        windows = {
            (row["key_id"], row["period"], row["start"]): row["used"]
            for row in conn.execute("SELECT * FROM windows")
        }
        return Loaded(keys, usage, windows)

    # -- the interface -------------------------------------------------------------------------

    async def load(self) -> Loaded:
        return await self._call(self._load)

    async def save_key(self, key: ClientKey) -> None:
        row = _key_row(key)

        def statements(conn: sqlite3.Connection) -> None:
            conn.execute(_SAVE_KEY, row)

        await self._call(lambda: self._transaction(statements))

    async def add_usage(
        self, usage: Mapping[UsageKey, UsageCounts], windows: Mapping[WindowKey, int]
    ) -> None:
        usage_rows = [
            (
                key_id,
                model,
                delta.requests,
                delta.errors,
                delta.refused,
                delta.cancelled,
                delta.input_tokens,
                delta.output_tokens,
                delta.last_used,
            )
            for (key_id, model), delta in usage.items()
        ]
        window_rows = [(*window, used) for window, used in windows.items()]
        newest = max((start for _, _, start in windows), default=None)

        def statements(conn: sqlite3.Connection) -> None:
            conn.executemany(_ADD_USAGE, usage_rows)
            conn.executemany(_ADD_WINDOW, window_rows)
            if newest is not None:
                conn.execute("DELETE FROM windows WHERE start < ?", (newest - WINDOW_RETENTION,))

        await self._call(lambda: self._transaction(statements))
