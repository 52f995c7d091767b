"""The dispatch queue against a real registry (no I/O): grants, skipping, limits, abandonment."""

from __future__ import annotations

import pytest

from nfrx.server.dispatch_queue import DispatchQueue, QueueFull, Ticket
from nfrx.server.http_errors import HttpError, model_not_found
from nfrx.server.registry import AgentRegistry
from tests.server.test_scheduler import agent


def ticket(model: str, **fields: object) -> Ticket:
    return Ticket(kind="llm", model=model, missing=lambda: model_not_found(model), **fields)  # type: ignore[arg-type]


def setup(*agents: object) -> tuple[AgentRegistry, DispatchQueue]:
    registry = AgentRegistry()
    for record in agents:
        registry.add(record)  # type: ignore[arg-type]
    return registry, DispatchQueue(registry, capacity=3)


def test_unknown_model_is_missing_at_once() -> None:
    _, queue = setup(agent("a", models=("m1",)))
    with pytest.raises(HttpError) as raised:
        queue.try_now(ticket("m2"))
    assert raised.value.status == 404


def test_free_slot_is_granted_and_taken() -> None:
    a = agent("a", models=("m1",))
    _, queue = setup(a)
    assert queue.try_now(ticket("m1")) == (a, "m1")
    assert a.inflight == 1
    assert queue.try_now(ticket("m1")) is None


def test_freed_slot_goes_to_the_oldest_waiter_it_can_serve() -> None:
    a = agent("a", models=("m1",))
    b = agent("b", models=("m2",))
    registry, queue = setup(a, b)
    queue.try_now(ticket("m1"))
    queue.try_now(ticket("m2"))
    wants_m1, wants_m2, also_m2 = ticket("m1"), ticket("m2"), ticket("m2")
    for t in (wants_m1, wants_m2, also_m2):
        queue.enqueue(t)
    assert [queue.position(t) for t in (wants_m1, wants_m2, also_m2)] == [1, 2, 3]
    registry.release(b)  # m2's agent frees: the older m1 request cannot use it
    assert wants_m2.done.is_set()
    assert wants_m2.granted == (b, "m2")
    assert not wants_m1.done.is_set()
    assert not also_m2.done.is_set()
    assert queue.position(also_m2) == 2
    registry.release(a)
    assert wants_m1.granted == (a, "m1")
    assert len(queue) == 1


def test_a_waiter_whose_model_vanished_gets_its_missing_error() -> None:
    a = agent("a", models=("m1",))
    registry, queue = setup(a)
    queue.try_now(ticket("m1"))
    waiting = ticket("m1")
    queue.enqueue(waiting)
    registry.remove(a)
    assert waiting.done.is_set()
    assert waiting.error is not None
    assert waiting.error.status == 404
    assert len(queue) == 0


def test_abandoning_a_granted_ticket_gives_the_slot_back_uncounted() -> None:
    a = agent("a", models=("m1",))
    registry, queue = setup(a)
    queue.try_now(ticket("m1"))
    waiting = ticket("m1")
    queue.enqueue(waiting)
    registry.release(a)
    assert waiting.granted == (a, "m1")
    assert a.inflight == 1
    queue.abandon(waiting)
    assert a.inflight == 0
    assert a.processed_total == 1  # only the first request's release counted
    queue.abandon(waiting)  # idempotent
    assert a.inflight == 0


def test_limits_front_insertion_and_exclusion() -> None:
    a = agent("a", models=("m1",))
    b = agent("b", models=("m1",))
    registry, queue = setup(a, b)
    queue.try_now(ticket("m1"))
    queue.try_now(ticket("m1"))
    waiting = [ticket("m1") for _ in range(3)]
    for t in waiting:
        queue.enqueue(t)
    with pytest.raises(QueueFull):
        queue.enqueue(ticket("m1"))
    retry = ticket("m1", exclude=frozenset({"a"}))
    queue.enqueue(retry, front=True)  # a retry goes first, even past the limit
    assert queue.position(retry) == 1
    registry.release(a)  # the retry may not go back to "a": the next in line takes it
    assert not retry.done.is_set()
    assert waiting[0].granted == (a, "m1")
    registry.release(b)
    assert retry.granted == (b, "m1")


def test_an_agent_that_refused_as_overloaded_waits_for_its_next_load_report() -> None:
    a = agent("a", models=("m1",), max_concurrency=2)
    registry, queue = setup(a)
    registry.saturate(a, a.heard)  # another instance took its slots meanwhile
    assert queue.try_now(ticket("m1")) is None
    waiting = ticket("m1")
    queue.enqueue(waiting)
    registry.report_load(a, 1)  # one slot held elsewhere, one free
    assert waiting.granted == (a, "m1")
    assert queue.try_now(ticket("m1")) is None  # 1 here + 1 elsewhere = 2


def test_slots_held_elsewhere_count_for_capacity_and_least_busy() -> None:
    a = agent("a", models=("m1",), max_concurrency=2)
    b = agent("b", models=("m1",), max_concurrency=2)
    registry, queue = setup(a, b)
    registry.report_load(a, 1)
    assert queue.try_now(ticket("m1")) == (b, "m1")  # a is busier, counting elsewhere
    registry.report_load(a, 2)
    assert a.free_slots == 0
    assert queue.try_now(ticket("m1")) == (b, "m1")
    assert queue.try_now(ticket("m1")) is None


def test_one_of_this_instances_streams_ending_lifts_a_saturation() -> None:
    a = agent("a", models=("m1",), max_concurrency=2)
    registry, queue = setup(a)
    assert queue.try_now(ticket("m1")) == (a, "m1")
    registry.saturate(a, a.heard)
    waiting = ticket("m1")
    queue.enqueue(waiting)
    registry.release(a)
    assert waiting.granted == (a, "m1")


def test_a_refusal_that_crossed_a_load_report_leaves_the_agent_eligible() -> None:
    # The agent's "a slot is free" Load was read before the refused stream's task saw the
    # refusal: the request goes back to the same agent at once instead of waiting for nothing.
    a = agent("a", models=("m1",), max_concurrency=1)
    registry, queue = setup(a)
    opened = a.heard  # what the agent had said when the stream was opened
    registry.report_load(a, 0)
    registry.saturate(a, opened)
    assert queue.try_now(ticket("m1")) == (a, "m1")
