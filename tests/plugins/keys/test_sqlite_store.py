"""The SQLite key store: what it writes comes back after a reopen, nothing is created before the
first write, every SQLite call runs on the store's own thread, and a write a cancelled caller
submitted is still done."""

from __future__ import annotations

import sqlite3
import stat
import threading
from typing import TYPE_CHECKING

import pytest
import trio

from nfrx.plugins.keys.model import Limits, parse_create, parse_update
from nfrx.plugins.keys.sqlite_store import SqliteKeyStore
from nfrx.plugins.keys.store import StoreError, UsageCounts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

NOW = 1_780_000_000.0


async def open_store(path: Path) -> AsyncIterator[SqliteKeyStore]:
    store = SqliteKeyStore(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteKeyStore]:
    async for opened in open_store(tmp_path / "state" / "keys.db"):
        yield opened


async def test_nothing_is_created_before_the_first_write(
    store: SqliteKeyStore, tmp_path: Path
) -> None:
    loaded = await store.load()
    assert (loaded.keys, loaded.usage, loaded.windows) == ([], {}, {})
    assert not (tmp_path / "state").exists()
    key, _ = parse_create({"name": "alice"}, NOW)
    await store.save_key(key)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


async def test_keys_usage_and_windows_come_back_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    key, _ = parse_create({"name": "alice", "limits": {"tokens_per_day": 9}}, NOW)
    changed = parse_update({"models": ["llama*"], "enabled": False}, key, NOW + 1)
    async for store in open_store(path):
        await store.save_key(key)
        await store.save_key(changed)  # the same id: replaced
        delta = UsageCounts(requests=2, errors=1, input_tokens=6, output_tokens=8, last_used=NOW)
        await store.add_usage({(key.id, "m"): delta}, {(key.id, "day", NOW): 14})
        later = UsageCounts(requests=1, refused=1, output_tokens=1, last_used=NOW - 5)
        await store.add_usage({(key.id, "m"): later}, {(key.id, "day", NOW): 1})
    async for store in open_store(path):
        loaded = await store.load()
    assert loaded.keys == [changed]
    assert loaded.keys[0].limits == Limits(tokens_per_day=9)
    assert loaded.usage == {
        (key.id, "m"): UsageCounts(
            requests=3, errors=1, refused=1, input_tokens=6, output_tokens=9, last_used=NOW
        )
    }
    assert loaded.windows == {(key.id, "day", NOW): 15}


async def test_old_windows_are_deleted(store: SqliteKeyStore) -> None:
    await store.add_usage({}, {("k", "month", NOW - 90 * 86400): 5})
    await store.add_usage({}, {("k", "day", NOW): 1})
    assert (await store.load()).windows == {("k", "day", NOW): 1}


async def test_no_sqlite_call_runs_on_the_event_loop_thread(
    store: SqliteKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []
    connect = sqlite3.connect

    def spying_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        threads.append(threading.current_thread())
        return connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", spying_connect)
    key, _ = parse_create({"name": "alice"}, NOW)
    await store.save_key(key)
    await store.load()
    assert len(threads) == 1  # one connection, opened once
    assert threads[0] is not loop_thread
    assert threads[0].name == "nfrx keys store"


async def test_a_write_submitted_by_a_cancelled_caller_is_done(store: SqliteKeyStore) -> None:
    key, _ = parse_create({"name": "alice"}, NOW)
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.save_key(key)  # submitted, then cancelled while waiting
    assert [k.id for k in (await store.load()).keys] == [key.id]


async def test_a_file_from_a_newer_nfrx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    async for store in open_store(path):
        with pytest.raises(StoreError, match="schema version 99 was written by a newer nfrx"):
            await store.load()


async def test_a_store_that_is_not_running_refuses(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not running"):
        await SqliteKeyStore(tmp_path / "keys.db").load()


async def test_an_unwritable_place_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    async for store in open_store(blocker / "keys.db"):
        key, _ = parse_create({"name": "alice"}, NOW)
        with pytest.raises(StoreError, match="key store"):
            await store.save_key(key)
