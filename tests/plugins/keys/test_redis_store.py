"""The keys' Redis store against a real redis-server: keys and their revisions, change notices,
the atomic admission of two instances at once, usage summed over instances, and a Redis that
does not answer."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from nfrx.plugins.keys.model import ClientKey, parse_create
from nfrx.plugins.keys.redis_store import RedisKeyStore
from nfrx.plugins.keys.service import KeyRevoked, NameTaken
from nfrx.plugins.keys.store import StoreError, UsageCounts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.redis_server import RedisServer

WINDOW = 60.0
NOW = 0.0
"""The middle of the minute window the test runs in (set by the ``live_now`` fixture)."""
pytestmark = pytest.mark.usefixtures("live_now")
CAP = 30.0
"""Seconds any test may take: a hang guard only."""


@asynccontextmanager
async def running(url: str) -> AsyncIterator[RedisKeyStore]:
    store = RedisKeyStore(url, WINDOW)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


def new_key(name: str, **body: Any) -> tuple[ClientKey, str]:
    return parse_create({"name": name, **body}, NOW)


async def test_a_key_is_saved_with_a_revision_found_by_digest_and_read_back(
    redis_url: str,
) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as store:
            key, _ = new_key("alice", limits={"requests_per_minute": 3}, models=["llama*"])
            assert await store.save(key) == 1
            changed = attrs.evolve(key, enabled=False, updated_at=NOW + 1)
            assert await store.save(changed) == 2
            assert await store.keys() == [(changed, 2)]
            assert await store.look_up(key.digest) == (changed, 2)
            assert await store.look_up("0" * 64) is None
            loaded = await store.load()
            assert (loaded.keys, loaded.usage, loaded.windows) == ([changed], {}, {})


async def test_names_stay_unique_and_a_revoked_key_stays_revoked(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as store:
            alice, _ = new_key("alice")
            bob, _ = new_key("bob")
            await store.save(alice)
            await store.save(bob)
            with pytest.raises(NameTaken):
                await store.save(attrs.evolve(bob, name="alice"))
            await store.save(attrs.evolve(alice, name="carol"))
            await store.save(attrs.evolve(bob, name="alice"))  # the old name was freed
            revoked = attrs.evolve(bob, name="alice", revoked_at=NOW)
            assert await store.save(revoked) == 3
            with pytest.raises(KeyRevoked):  # an instance that had not heard of it yet
                await store.save(attrs.evolve(bob, name="alice", enabled=False))
            assert dict(await store.keys())[revoked] == 3


async def test_every_instance_hears_of_each_change(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as a, running(redis_url) as b:
            heard: list[tuple[ClientKey, int]] = []
            news = trio.Event()

            def changed(key: ClientKey, revision: int) -> None:
                heard.append((key, revision))
                news.set()

            b.on_change = changed
            await b.subscribed()
            key, _ = new_key("alice")
            await a.save(key)
            await news.wait()
            assert heard == [(key, 1)]


async def test_admission_sees_a_newer_revision_and_counts_nothing_then(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as a, running(redis_url) as b:
            key, _ = new_key("alice", limits={"requests_per_minute": 5})
            await a.save(key)
            revoked = attrs.evolve(key, revoked_at=NOW)
            await a.save(revoked)
            stale = await b.admit(key, 1, count=True, now=NOW)
            assert (stale.stale, stale.key, stale.revision) == (True, revoked, 2)
            totals = await b.totals([key.id], NOW)
            assert totals.windows[key.id]["req"] == (NOW - WINDOW / 2, 0)
            gone = await b.admit(attrs.evolve(key, id="key_gone"), 1, count=True, now=NOW)
            assert (gone.stale, gone.key) == (True, None)


async def test_two_instances_admitting_at_once_let_exactly_the_limit_through(
    redis_url: str,
) -> None:
    limit = 7
    with trio.fail_after(CAP):
        async with running(redis_url) as a, running(redis_url) as b:
            key, _ = new_key("alice", limits={"requests_per_minute": limit})
            await a.save(key)
            verdicts: list[str | None] = []

            async def ask(store: RedisKeyStore) -> None:
                admission = await store.admit(key, 1, count=True, now=NOW)
                verdicts.append(admission.refused)

            async with trio.open_nursery() as nursery:
                for n in range(4 * limit):
                    nursery.start_soon(ask, a if n % 2 else b)
            assert verdicts.count(None) == limit
            assert set(verdicts) == {None, "requests_per_minute"}
            totals = await a.totals([key.id], NOW)
            assert totals.windows[key.id]["req"][1] == limit
            # The next window starts empty.
            assert (await a.admit(key, 1, count=True, now=NOW + WINDOW)).refused is None


async def test_a_check_that_does_not_count_leaves_the_window_as_it_is(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as store:
            key, _ = new_key("alice", limits={"requests_per_minute": 1})
            await store.save(key)
            for _ in range(3):
                assert (await store.admit(key, 1, count=False, now=NOW)).refused is None
            assert (await store.admit(key, 1, count=True, now=NOW)).refused is None
            assert (await store.admit(key, 1, count=True, now=NOW)).refused == (
                "requests_per_minute"
            )


@pytest.mark.parametrize(
    ("limit", "period"),
    [("tokens_per_minute", "minute"), ("tokens_per_day", "day"), ("tokens_per_month", "month")],
)
async def test_tokens_written_by_one_instance_refuse_on_another(
    redis_url: str, limit: str, period: str
) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as a, running(redis_url) as b:
            key, _ = new_key("alice", limits={limit: 100})
            await a.save(key)
            window = (await a.totals([key.id], NOW)).windows[key.id][period]
            await a.add_usage({}, {(key.id, period, window[0]): 60})
            assert (await b.admit(key, 1, count=True, now=NOW)).refused is None
            await b.add_usage({}, {(key.id, period, window[0]): 40})
            assert (await a.admit(key, 1, count=True, now=NOW)).refused == limit
            assert (await b.totals([key.id], NOW)).windows[key.id][period] == (window[0], 100)


async def test_usage_of_several_instances_adds_up(redis_url: str) -> None:
    with trio.fail_after(CAP):
        async with running(redis_url) as a, running(redis_url) as b:
            key, _ = new_key("alice")
            await a.save(key)
            first = UsageCounts(requests=2, errors=1, input_tokens=10, last_used=NOW + 5)
            second = UsageCounts(requests=1, refused=1, output_tokens=7, last_used=NOW)
            await a.add_usage({(key.id, "m:1"): first, (key.id, "-"): UsageCounts(cancelled=1)}, {})
            await b.add_usage({(key.id, "m:1"): second}, {})
            totals = await b.totals([key.id], NOW)
            assert totals.usage == {
                key.id: {
                    "m:1": UsageCounts(
                        requests=3,
                        errors=1,
                        refused=1,
                        input_tokens=10,
                        output_tokens=7,
                        last_used=NOW + 5,
                    ),
                    "-": UsageCounts(cancelled=1),
                }
            }
            # Nothing written since: the usage is not read again (the windows are).
            assert (await b.totals([key.id], NOW)).usage is None
            assert (await b.totals([key.id], NOW, usage=True)).usage == totals.usage
            loaded = await a.load()
            assert loaded.usage[(key.id, "m:1")].requests == 3


# coredis drops the anyio channels of a connection that failed without closing them: its own
# housekeeping, reported at GC time.
@pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")
async def test_a_redis_that_does_not_answer_is_a_store_error_saying_so(
    redis_server: RedisServer, redis_url: str
) -> None:
    key, _ = new_key("alice", limits={"requests_per_minute": 1})
    with trio.fail_after(CAP):
        async with running(redis_url) as store:
            redis_server.stop()
            calls = [
                lambda: store.keys(),
                lambda: store.save(key),
                lambda: store.look_up(key.digest),
                lambda: store.admit(key, 1, count=True, now=NOW),
                lambda: store.add_usage({(key.id, "-"): UsageCounts(requests=1)}, {}),
                lambda: store.totals([key.id], NOW),
                lambda: store.load(),
            ]
            for call in calls:
                with pytest.raises(StoreError, match=r"^Redis: "):
                    await call()
    gc.collect()  # coredis's leftovers, reported here where they are expected
