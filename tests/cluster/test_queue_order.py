"""One FIFO across instances, without I/O: the mirror, the deference rule, the writes."""

from __future__ import annotations

from typing import Any

from nfrx.cluster.queue_order import Entry, SharedOrder, decode_entry, encode_entry
from nfrx.server.dispatch_queue import DispatchQueue
from nfrx.server.registry import AgentRegistry
from tests.server.test_dispatch_queue import ticket
from tests.server.test_scheduler import agent


class RecordingStore:
    """What the order writes to Redis, answered with the next scores of a sequence."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int | None, str]], list[str]]] = []
        self.seq = 0

    async def queue_update(
        self, adds: list[tuple[int | None, str]], removes: list[str]
    ) -> list[int]:
        self.calls.append((adds, removes))
        scores = []
        for score, _ in adds:
            if score is None:
                self.seq += 1
                score = self.seq
            scores.append(score)
        return scores


def shared(*agents: Any, attached: bool = True) -> tuple[AgentRegistry, DispatchQueue, SharedOrder]:
    registry = AgentRegistry()
    for record in agents:
        registry.add(record)
    queue = DispatchQueue(registry, capacity=10)
    order = SharedOrder(queue, "here", lambda instance, kind, agent_id: attached)
    queue.order = order
    order.load([])
    return registry, queue, order


def remote(seq: int, model: str = "m1", instance: str = "there", **fields: Any) -> list[Any]:
    text = encode_entry(instance, seq, ticket(model, **fields))
    return [seq, text]


def test_entries_round_trip_and_junk_is_ignored() -> None:
    text = encode_entry("b", 7, ticket("llama3:8b", agent_id="x", aliases=True))
    assert decode_entry(3, text) == Entry(
        seq=3, instance="b", kind="llm", model="llama3:8b", agent_id="x", aliases=True
    )
    assert decode_entry(1, "not json") is None
    assert decode_entry(1, '{"i": "b"}') is None


def test_eligibility_follows_model_alias_and_agent_restriction() -> None:
    a = agent("a", models=("llama3:8b-q4_0",))
    exact = Entry(
        seq=1, instance="b", kind="llm", model="llama3:8b-q4_0", agent_id=None, aliases=False
    )
    alias = Entry(seq=1, instance="b", kind="llm", model="llama3:8b", agent_id=None, aliases=True)
    no_alias = Entry(
        seq=1, instance="b", kind="llm", model="llama3:8b", agent_id=None, aliases=False
    )
    other = Entry(
        seq=1, instance="b", kind="llm", model="llama3:8b-q4_0", agent_id="z", aliases=False
    )
    assert [e.eligible(a) for e in (exact, alias, no_alias, other)] == [True, True, False, False]


def test_a_newcomer_leaves_a_free_slot_to_an_older_waiter_of_another_instance() -> None:
    a = agent("a", models=("m1",))
    _, queue, order = shared(a)
    order.apply({"add": [remote(5)], "del": {}})  # cjson writes an empty list as {}
    assert order.waiting() == 1
    assert queue.try_now(ticket("m1")) is None  # the other instance's waiter takes it
    assert a.inflight == 0
    newcomer = ticket("m1")
    queue.enqueue(newcomer)
    assert queue.position(newcomer) == 2  # behind the other instance's waiter
    order.apply({"add": {}, "del": [remote(5)[1]]})  # it was served there
    assert newcomer.granted == (a, "m1")


def test_only_as_many_waiters_as_free_slots_hold_a_newcomer_back() -> None:
    a = agent("a", models=("m1",), max_concurrency=2)
    _, queue, order = shared(a)
    order.apply({"add": [remote(5)]})
    assert queue.try_now(ticket("m1")) == (a, "m1")  # one slot for them, one for us


def test_waiters_the_agent_cannot_serve_or_not_attached_hold_nobody_back() -> None:
    a = agent("a", models=("m1",))
    _, queue, order = shared(a)
    order.apply({"add": [remote(5, model="m2"), remote(6, agent_id="z")]})
    assert queue.try_now(ticket("m1")) == (a, "m1")
    b = agent("b", models=("m1",))
    _, queue, order = shared(b, attached=False)  # the agent has no tunnel to "there"
    order.apply({"add": [remote(5)]})
    assert queue.try_now(ticket("m1")) == (b, "m1")


def test_a_local_waiter_older_than_the_remote_ones_goes_first() -> None:
    a = agent("a", models=("m1",))
    registry, queue, order = shared(a)
    queue.try_now(ticket("m1"))
    mine = ticket("m1")
    queue.enqueue(mine)
    order.registered[mine] = (3, "mine")
    order.apply({"add": [remote(5)]})
    assert queue.position(mine) == 1
    registry.release(a)
    assert mine.granted == (a, "m1")


def test_the_mirror_is_ignored_out_of_step_and_dead_instances_are_purged() -> None:
    a = agent("a", models=("m1",))
    _, queue, order = shared(a)
    order.apply({"add": [remote(5), remote(6, instance="gone")]})
    order.out_of_step()
    assert order.waiting() == 0
    assert queue.try_now(ticket("m1")) == (a, "m1")
    order.load([(5, remote(5)[1]), (6, remote(6, instance="gone")[1])])
    assert order.purge({"here", "there"}) == [remote(6, instance="gone")[1]]
    assert order.waiting() == 1


async def test_writes_join_and_leave_in_one_call_and_a_requeued_waiter_keeps_its_place() -> None:
    a = agent("a", models=("m1",))
    registry, queue, order = shared(a)
    queue.try_now(ticket("m1"))
    store = RecordingStore()
    first, second = ticket("m1"), ticket("m1")
    queue.enqueue(first)
    queue.enqueue(second)
    await order.write(store)  # type: ignore[arg-type]
    ((adds, removes),) = store.calls
    assert [score for score, _ in adds] == [None, None]
    assert removes == []
    assert order.registered[first][0] == 1
    registry.release(a)  # first is granted: it leaves
    await order.write(store)  # type: ignore[arg-type]
    assert store.calls[1] == ([], [order_text(store.calls[0][0][0])])
    queue.enqueue(first, front=True)  # refused as overloaded: back, with its old score
    await order.write(store)  # type: ignore[arg-type]
    assert [score for score, _ in store.calls[2][0]] == [1]
    await order.write(store)  # type: ignore[arg-type]
    assert len(store.calls) == 3  # nothing changed, nothing written


def order_text(add: tuple[int | None, str]) -> str:
    return add[1]


async def test_a_retry_never_registered_goes_before_the_waiters_already_registered() -> None:
    a = agent("a", models=("m1",))
    _, queue, order = shared(a)
    queue.try_now(ticket("m1"))
    store = RecordingStore()
    waiting, retry = ticket("m1"), ticket("m1")
    queue.enqueue(waiting)
    await order.write(store)  # type: ignore[arg-type]
    queue.enqueue(retry, front=True)  # failed on its first agent before any byte
    await order.write(store)  # type: ignore[arg-type]
    assert [score for score, _ in store.calls[1][0]] == [0]  # ahead of every instance's
