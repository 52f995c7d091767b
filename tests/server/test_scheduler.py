"""The scheduler and registry bookkeeping, as tables (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from nfrx.server.registry import AgentRecord, AgentRegistry, DuplicateAgent
from nfrx.server.scheduler import alias_key, choose, choose_match, matches


class FakeSession:
    def __init__(self, closed: bool = False) -> None:
        self.closed = closed


def agent(agent_id: str, **fields: Any) -> AgentRecord:
    session = FakeSession(fields.pop("closed", False))
    return AgentRecord(
        kind="llm",
        id=agent_id,
        name=agent_id,
        version="t",
        session=session,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        ([], None),
        ([agent("a")], "a"),
        ([agent("a", inflight=1)], None),  # capacity 1, busy
        ([agent("a", inflight=1, max_concurrency=2), agent("b", inflight=0)], "b"),
        (
            [agent("a", inflight=1, max_concurrency=4), agent("b", inflight=2, max_concurrency=9)],
            "a",
        ),
        ([agent("a", status="draining"), agent("b", inflight=1, max_concurrency=2)], "b"),
        ([agent("a", status="not_ready"), agent("b", closed=True)], None),
        ([agent("a", max_concurrency=0)], None),
        # Equal load: the one that got a request longest ago.
        ([agent("a", dispatch_seq=5), agent("b", dispatch_seq=2), agent("c", dispatch_seq=9)], "b"),
    ],
)
def test_choose(agents: list[AgentRecord], expected: str | None) -> None:
    chosen = choose(agents)
    assert (chosen.id if chosen else None) == expected


async def test_three_idle_agents_each_get_one_of_three_requests() -> None:
    registry = AgentRegistry()
    agents = [agent(x) for x in "abc"]
    for a in agents:
        registry.add(a)
    picked = []
    for _ in range(3):
        chosen = choose(agents)
        assert chosen is not None
        registry.acquire(chosen)
        picked.append(chosen.id)
    assert sorted(picked) == ["a", "b", "c"]
    # After all are released, the order keeps rotating rather than always starting at "a".
    for a in agents:
        registry.release(a)
    first = choose(agents)
    assert first is not None
    assert first.id == picked[0]


async def test_duplicate_live_id_is_refused_and_dead_one_replaced() -> None:
    registry = AgentRegistry()
    first = agent("x")
    registry.add(first)
    with pytest.raises(DuplicateAgent):
        registry.add(agent("x"))
    assert registry.get("llm", "x") is first
    first.session.closed = True  # type: ignore[attr-defined]
    second = agent("x")
    registry.add(second)
    assert registry.get("llm", "x") is second
    registry.remove(first)  # the old session ending must not remove its successor
    assert registry.get("llm", "x") is second


async def test_release_wakes_waiters(autojump_clock: trio.testing.MockClock) -> None:
    registry = AgentRegistry()
    a = agent("a")
    registry.add(a)
    registry.acquire(a)
    woke = trio.Event()

    async def waiter() -> None:
        await registry.wait_changed()
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        registry.release(a)
        await woke.wait()
    assert a.processed_total == 1


def test_release_counts_each_exchange_once_by_how_it_ended() -> None:
    registry = AgentRegistry()
    a = agent("a")
    registry.add(a)
    for outcome in ({}, {"failed": True}, {"cancelled": True}, {"failed": True, "cancelled": True}):
        registry.acquire(a)
        registry.release(a, **outcome)
    registry.acquire(a)
    registry.release(a, counted=False)
    assert (a.processed_total, a.failures_total, a.cancelled_total) == (1, 1, 2)
    assert a.inflight == 0


def test_models_table_leaves_out_not_ready_agents() -> None:
    registry = AgentRegistry()
    registry.add(agent("a", models=("m1", "m2")))
    registry.add(agent("b", models=("m2",), status="not_ready"))
    registry.add(agent("c", models=("m2",), status="draining"))
    table = registry.models("llm")
    assert sorted(table) == ["m1", "m2"]
    assert [x.id for x in table["m2"]] == ["a", "c"]


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("llama3:8b-q4_0", "llama3:8b"),
        ("llama3:8b", "llama3:8b"),
        ("llama3:8b-instruct-q8_0", "llama3:8b"),
        ("llama3", None),
        ("org/llama3:70b-fp16", "org/llama3:70b"),
    ],
)
def test_alias_key(model: str, key: str | None) -> None:
    assert alias_key(model) == key


def test_exact_match_wins_over_alias_and_alias_names_the_concrete_model() -> None:
    exact = agent("exact", models=("llama3:8b",))
    alias = agent("alias", models=("llama3:8b-q4_0",))
    found = matches([alias, exact], "llama3:8b", aliases=True)
    assert choose_match(found) == (exact, "llama3:8b")
    exact.inflight = 1  # busy: the alias agent takes it, under its own model name
    assert choose_match(found) == (alias, "llama3:8b-q4_0")
    assert matches([alias], "llama3:8b", aliases=False) == []
    assert matches([alias], "llama3:70b", aliases=True) == []
