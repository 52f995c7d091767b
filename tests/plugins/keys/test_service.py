"""The keys service without HTTP: admission in memory, usage by model, admin changes written
through the store before they apply, and usage written in batches, once more at shutdown."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
import trio
import trio.testing

from nfrx.config.model import ServerConfig
from nfrx.plugins.keys.service import MAX_MODELS_PER_KEY, OTHER, KeysService, NameTaken
from nfrx.plugins.keys.store import MemoryKeyStore, StoreError
from nfrx.server import accounting
from nfrx.server.accounting import RequestRecord
from nfrx.server.gateway import Gateway
from nfrx.server.http_errors import HttpError
from nfrx.server.usage import Usage

if TYPE_CHECKING:
    from typing import Any

    from nfrx.server.proxy import Exchange

NOW = 1_780_000_000.0  # a Saturday, 2026-05-28T20:26:40Z


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Setup:
    def __init__(self, **config: Any) -> None:
        self.now = NOW
        self.store = MemoryKeyStore()
        self.gateway = Gateway(ServerConfig(**config))
        self.service = KeysService(self.gateway, self.store, clock=lambda: self.now)

    def request(self, token: str | None, route: str = "llm") -> RequestRecord:
        """One request through admission and to its end (its record, refused or not)."""
        record = RequestRecord("llm")
        with accounting.recording(record), contextlib.suppress(HttpError):
            self.service.admit(token, route)
        record.status = 429 if record.refused else 200
        for listener in self.gateway.request_listeners:
            listener(record)
        return record


async def test_only_keys_it_issued_are_looked_at() -> None:
    setup = Setup()
    key, secret = await setup.service.create({"name": "alice"})
    assert setup.service.admit(None, "llm") is False
    assert setup.service.admit("ak", "llm") is False
    assert setup.service.admit(secret + "x", "llm") is False
    record = RequestRecord("llm")
    with accounting.recording(record):
        assert setup.service.admit(secret, "llm") is True
    assert record.key == key.id


async def test_refusals_say_why_and_mark_the_request() -> None:
    setup = Setup()
    _, secret = await setup.service.create(
        {"name": "alice", "routes": ["llm"], "models": ["llama*"]}
    )
    record = RequestRecord("docling")
    with accounting.recording(record), pytest.raises(HttpError) as refused:
        setup.service.admit(secret, "docling")
    assert (refused.value.status, refused.value.code) == (403, "route_not_allowed")
    assert record.refused
    record = RequestRecord("llm")
    with accounting.recording(record):
        setup.service.admit(secret, "llm")
        assert setup.service.may_use("llama3:8b")
        assert not setup.service.may_use("qwen")
        with pytest.raises(HttpError) as refused:
            setup.service.admit_model("qwen")
    assert (refused.value.status, refused.value.code) == (403, "model_not_allowed")
    assert refused.value.body()["error"]["type"] == "permission_error"


async def test_rate_limit_429_carries_retry_after_and_recovers_in_the_next_window() -> None:
    setup = Setup(key_rate_window=10.0)
    _, secret = await setup.service.create({"name": "a", "limits": {"requests_per_minute": 1}})
    setup.now = 1_780_000_003.0  # 3 s into a 10 s window
    assert not setup.request(secret).refused
    refused = RequestRecord("llm")
    with accounting.recording(refused), pytest.raises(HttpError) as error:
        setup.service.admit(secret, "llm")
    assert error.value.status == 429
    assert error.value.headers == {"Retry-After": "7"}
    assert error.value.body()["error"] == {
        "message": "the key 'a' reached its limit of 1 requests per minute; retry in 7 s",
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
    }
    setup.now += 7
    assert not setup.request(secret).refused


async def test_a_revoked_key_is_refused_at_once_and_its_revocation_is_stored() -> None:
    setup = Setup()
    key, secret = await setup.service.create({"name": "alice"})
    revoked = await setup.service.revoke("alice")
    assert setup.store.keys[key.id] == revoked
    with accounting.recording(RequestRecord("llm")), pytest.raises(HttpError) as refused:
        setup.service.admit(secret, "llm")
    assert (refused.value.status, refused.value.code) == (401, "key_revoked")
    assert await setup.service.revoke(key.id) == revoked  # again: no change


async def test_a_change_the_store_refuses_does_not_apply() -> None:
    setup = Setup()
    _, secret = await setup.service.create({"name": "alice"})
    setup.store.fail = True
    with pytest.raises(StoreError):
        await setup.service.revoke("alice")
    with accounting.recording(RequestRecord("llm")):
        assert setup.service.admit(secret, "llm") is True
    with pytest.raises(StoreError):
        await setup.service.create({"name": "bob"})
    assert [key.name for key in setup.service.all_keys()] == ["alice"]


async def test_names_are_never_reused() -> None:
    setup = Setup()
    await setup.service.create({"name": "alice"})
    await setup.service.revoke("alice")
    with pytest.raises(NameTaken):
        await setup.service.create({"name": "alice"})
    await setup.service.create({"name": "bob"})
    with pytest.raises(NameTaken):
        await setup.service.update("bob", {"name": "alice"})


async def test_usage_is_counted_by_model_with_tokens_from_every_exchange() -> None:
    setup = Setup()
    key, secret = await setup.service.create({"name": "a", "limits": {"tokens_per_day": 100}})
    record = RequestRecord("llm")
    with accounting.recording(record):
        setup.service.admit(secret, "llm")
        record.exchange_ended("m1", Usage(3, 4), failed=True, cancelled=False)  # retried
        record.exchange_ended("m1", Usage(3, 5), failed=False, cancelled=False)
        for usage in (Usage(3, 4), Usage(3, 5)):
            setup.service.exchange_ended(exchange(usage))
    record.status = 200
    setup.service.request_ended(record)
    view = setup.service.view(key, setup.now, detail=True)
    assert view["usage"]["requests"] == 1
    assert view["usage"]["errors"] == 0  # the last attempt succeeded
    assert (view["usage"]["input_tokens"], view["usage"]["output_tokens"]) == (6, 9)
    assert [row["model"] for row in view["usage_by_model"]] == ["m1"]
    assert view["windows"]["tokens_today"] == 15


async def test_models_past_the_cap_share_one_row() -> None:
    setup = Setup()
    key, secret = await setup.service.create({"name": "a"})
    for index in range(MAX_MODELS_PER_KEY + 5):
        record = RequestRecord("llm")
        with accounting.recording(record):
            setup.service.admit(secret, "llm")
            record.exchange_ended(f"m{index}", None, failed=False, cancelled=False)
        record.status = 200
        setup.service.request_ended(record)
    rows = setup.service.view(key, setup.now, detail=True)["usage_by_model"]
    assert len(rows) == MAX_MODELS_PER_KEY + 1
    assert next(row for row in rows if row["model"] == OTHER)["requests"] == 5


async def test_usage_is_written_in_batches_and_once_more_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    setup = Setup()
    service, store = setup.service, setup.store
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        key, secret = await service.create({"name": "alice"})
        setup.request(secret)
        setup.request(secret)
        assert store.usage == {}
        await trio.sleep(1.5)
        assert store.usage[(key.id, "-")].requests == 2
        writes = store.writes
        await trio.sleep(5)
        assert store.writes == writes  # nothing new, nothing written
        setup.request(secret)
        nursery.cancel_scope.cancel()  # before the next batch: the last write catches it
    assert store.usage[(key.id, "-")].requests == 3


async def test_a_failed_write_keeps_its_usage_for_the_next_one() -> None:
    setup = Setup()
    key, secret = await setup.service.create({"name": "alice"})
    setup.request(secret)
    setup.store.fail = True
    await setup.service.flush()
    setup.store.fail = False
    setup.request(secret)
    await setup.service.flush()
    assert setup.store.usage[(key.id, "-")].requests == 2


async def test_keys_usage_and_windows_are_loaded_at_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = Setup()
    key, secret = await first.service.create({"name": "a", "limits": {"tokens_per_day": 10}})
    record = first.request(secret)
    with accounting.recording(record):
        first.service.exchange_ended(exchange(Usage(5, 5)))
    await first.service.flush()
    second = Setup()
    second.store = first.store
    second.service = KeysService(second.gateway, first.store, clock=lambda: second.now)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.service.run)
        assert second.service.find("a").id == key.id
        assert second.service.view(key, NOW)["usage"]["requests"] == 1
        refused = second.request(secret)
        assert refused.refused  # the day's 10 tokens were used before the restart
        nursery.cancel_scope.cancel()


def exchange(usage: Usage) -> Exchange:
    """What the service reads of an exchange that ended: its usage."""
    return cast("Exchange", SimpleNamespace(usage=usage))
