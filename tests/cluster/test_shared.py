"""An instance's heartbeat over a recording store (no Redis): when it tells the others to look."""

from __future__ import annotations

import json
from typing import Any

from nfrx.cluster.members import Membership
from nfrx.cluster.shared import SharedCluster
from nfrx.cluster.store import Beat, MemberRecord
from nfrx.config.model import ServerConfig
from nfrx.server.registry import AgentRecord
from nfrx.server.runner import compose


class FakeSession:
    closed = False
    last_heard = 0.0

    def send_control(self, frame: object) -> None:
        pass


class RecordingStore:
    """Answers every heartbeat with this instance alone; counts the announcements."""

    def __init__(self) -> None:
        self.announced = 0
        self.published: list[list[dict[str, Any]]] = []
        self.lost = True

    async def beat(self, me: MemberRecord, agents: str | None, ttl: float) -> Beat:
        if agents is not None:
            self.published.append(json.loads(agents))
        lost, self.lost = self.lost, False
        return Beat(members={me.id: me}, agents={}, dead=(), lost=lost)

    async def announce(self) -> None:
        self.announced += 1

    async def queue_remove(self, texts: list[str]) -> None:
        pass


def agent(agent_id: str) -> AgentRecord:
    session: Any = FakeSession()
    return AgentRecord(kind="llm", id=agent_id, name=agent_id, version="t", session=session)


async def test_an_agent_that_comes_or_goes_is_published_at_once_and_announced() -> None:
    gateway = compose(ServerConfig(redis_url="redis://127.0.0.1:1", instance_id="a"))
    cluster = gateway.cluster
    assert isinstance(cluster, SharedCluster)
    cluster._membership = Membership(cluster._record())
    store: Any = RecordingStore()
    await cluster._beat(store)
    assert store.announced == 1  # joining
    assert not cluster._beat_now.is_set()

    record = agent("x")
    gateway.registry.add(record)
    # The others count this instance's waiters for an agent only once they know it is here:
    # the heartbeat does not wait for its period, and the others are told to read it.
    assert cluster._beat_now.is_set()
    await cluster._beat(store)
    assert store.announced == 2
    assert [a["id"] for a in store.published[-1]] == ["x"]

    # How busy an agent is changes nothing the others need at once.
    gateway.registry.acquire(record)
    gateway.registry.release(record)
    assert not cluster._beat_now.is_set()
    await cluster._beat(store)
    assert store.announced == 2

    gateway.registry.remove(record)
    assert cluster._beat_now.is_set()
    await cluster._beat(store)
    assert store.announced == 3
    assert store.published[-1] == []
