"""The state stream (``snapshot_stream``) in process: what it sends after a change."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from nfrx.config.model import ServerConfig
from nfrx.server.registry import AgentRecord
from nfrx.server.runner import compose
from nfrx.server.state import ServerInfo, snapshot_stream


class Session:
    """What the state reads of an agent's tunnel."""

    closed = False
    last_heard = 0.0


def agent(agent_id: str) -> AgentRecord:
    return AgentRecord(kind="llm", id=agent_id, name=agent_id, version="t", session=Session())  # type: ignore[arg-type]


def llm_agents(event: bytes) -> list[str]:
    snapshot: dict[str, Any] = json.loads(event.removeprefix(b"data: "))
    return [a["id"] for a in snapshot["plugins"]["llm"]["agents"]]


async def test_a_change_made_while_a_snapshot_is_being_sent_is_not_lost() -> None:
    """The change lands after the stream built its snapshot and before it waits again (here:
    while the reader holds the first event). The stream must send it at once, not after the
    keep-alive interval or the next change."""
    gateway = compose(ServerConfig())
    stream = snapshot_stream(gateway, ServerInfo.now(), min_interval=0, keepalive_interval=3600)
    assert llm_agents(await anext(stream)) == []
    gateway.registry.add(agent("a1"))
    with trio.fail_after(30):  # a hang guard: without the fix the stream waits an hour
        assert llm_agents(await anext(stream)) == ["a1"]
    await stream.aclose()


async def test_changes_while_the_stream_waits_are_sent() -> None:
    gateway = compose(ServerConfig())
    stream = snapshot_stream(gateway, ServerInfo.now(), min_interval=0, keepalive_interval=3600)
    await anext(stream)
    async with trio.open_nursery() as nursery:
        received: list[list[str]] = []

        async def read() -> None:
            received.append(llm_agents(await anext(stream)))

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        gateway.registry.add(agent("a2"))
    assert received == [["a2"]]
    await stream.aclose()
