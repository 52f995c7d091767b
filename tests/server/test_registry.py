"""The registry remembers a model only while a registered agent lists it (no I/O)."""

from __future__ import annotations

import pytest

from nfrx.server import registry as registry_module
from nfrx.server.registry import AgentRegistry
from tests.server.test_scheduler import agent


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.time()`` as the registry sees it; tests move it by assigning ``clock[0]``."""
    now = [1_000.0]
    monkeypatch.setattr(registry_module.time, "time", lambda: now[0])
    return now


def test_created_is_stable_while_any_agent_serves_the_model(clock: list[float]) -> None:
    registry = AgentRegistry()
    a = agent("a", models=("m",))
    registry.add(a)
    clock[0] = 2_000
    b = agent("b", models=("m", "n"))
    registry.add(b)
    registry.remove(a)
    clock[0] = 3_000
    registry.update(b, models=("m", "n"), max_concurrency=1, status="ready", embedding_batch_size=0)
    assert registry.model_created("llm", "m") == 1_000
    assert registry.model_created("llm", "n") == 2_000


def test_a_model_nobody_serves_is_forgotten(clock: list[float]) -> None:
    registry = AgentRegistry()
    a = agent("a", models=("m", "n"))
    registry.add(a)
    clock[0] = 2_000
    registry.update(a, models=("n",), max_concurrency=1, status="ready", embedding_batch_size=0)
    assert registry.model_created("llm", "m") == 0
    assert registry.model_created("llm", "n") == 1_000
    registry.remove(a)
    assert registry.model_created("llm", "n") == 0
    registry.add(agent("b", models=("m",)))  # announced again: a new first sighting
    assert registry.model_created("llm", "m") == 2_000


def test_memory_follows_the_live_agents(clock: list[float]) -> None:
    """Round after round of announcements (new names each time) leaves nothing behind."""
    registry = AgentRegistry()
    steady = agent("steady", models=("m",))
    registry.add(steady)
    for round_ in range(20):
        record = agent(f"churn-{round_}", models=tuple(f"r{round_}-{i}" for i in range(500)))
        registry.add(record)
        for step in range(3):
            models = tuple(f"r{round_}-s{step}-{i}" for i in range(500))
            registry.update(
                record, models=models, max_concurrency=1, status="ready", embedding_batch_size=0
            )
        registry.remove(record)
    assert registry._served.keys() == {("llm", "m")}


def test_a_replaced_record_gives_its_models_back(clock: list[float]) -> None:
    registry = AgentRegistry()
    old = agent("a", models=("old",), closed=True)  # its tunnel died, not yet removed
    registry.add(old)
    new = agent("a", models=("new",))
    registry.add(new)  # same id: replaces the dead one
    registry.remove(old)  # the old tunnel's cleanup comes late: a no-op
    assert registry.model_created("llm", "old") == 0
    assert registry.model_created("llm", "new") == 1_000
    registry.update(old, models=("x",), max_concurrency=1, status="ready", embedding_batch_size=0)
    assert registry.model_created("llm", "x") == 0  # a stale record counts for nothing
    registry.remove(new)
    assert not registry._served


def test_duplicates_in_one_announcement_count_once(clock: list[float]) -> None:
    registry = AgentRegistry()
    a = agent("a", models=("m", "m"))
    registry.add(a)
    registry.remove(a)
    assert not registry._served
