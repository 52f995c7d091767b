"""The agent's tunnels to several instances: one capacity for all, Load frames, the list of
instances to keep a tunnel to (no I/O: sessions are stand-ins that record what they are sent)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
import trio.testing

from nfrx.agent.instances import Instances, connect_url
from nfrx.protocol import Frame, Load


@attrs.define
class FakeSession:
    sent: list[Frame] = attrs.field(factory=list)
    closed: bool = False
    finished: trio.Event = attrs.field(factory=trio.Event)

    def send_control(self, frame: Frame) -> None:
        self.sent.append(frame)


def loads(session: FakeSession) -> list[int]:
    return [f.elsewhere for f in session.sent if isinstance(f, Load)]


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("ws://10.0.0.1:8081", "ws://10.0.0.1:8081/api/llm/connect"),
        ("https://nfrx.example.com/gw/", "wss://nfrx.example.com/gw/api/llm/connect"),
        ("http://h:1", "ws://h:1/api/llm/connect"),
    ],
)
def test_connect_url(base: str, expected: str) -> None:
    assert connect_url(base, "llm") == expected


async def run(instances: Instances, dialled: list[str]) -> Any:
    async def dial(instance_id: str, url: str) -> None:
        dialled.append(instance_id)
        await trio.sleep_forever()

    return dial


async def test_one_capacity_for_every_tunnel_and_each_instance_hears_of_the_others() -> None:
    instances = Instances(max_concurrency=2)
    dialled: list[str] = []
    a, b = FakeSession(), FakeSession()
    async with trio.open_nursery() as nursery:
        await nursery.start(instances.run, await run(instances, dialled))
        ta = instances.attach("a", a, (("a", "ws://a"), ("b", "ws://b")))  # type: ignore[arg-type]
        tb = instances.attach("b", b, (("a", "ws://a"), ("b", "ws://b")))  # type: ignore[arg-type]
        assert ta is not None
        assert tb is not None
        assert instances.take(ta)
        assert instances.take(tb)
        assert not instances.take(ta)  # the third, whichever tunnel it comes from
        await trio.testing.wait_all_tasks_blocked()
        # b is told what a holds; a, refused, hears nothing until a slot is free.
        assert (loads(a), loads(b)) == ([], [1])
        instances.give_back(tb)
        await trio.testing.wait_all_tasks_blocked()
        # a hears that b holds none now; b's number did not change.
        assert (loads(a), loads(b)) == ([0], [1])
        assert sorted(dialled) == ["a", "b"]
        nursery.cancel_scope.cancel()


async def test_a_single_tunnel_gets_no_load_frames() -> None:
    instances = Instances(max_concurrency=1)
    alone = FakeSession()
    async with trio.open_nursery() as nursery:
        await nursery.start(instances.run, await run(instances, []))
        tunnel = instances.attach("", alone, ())  # type: ignore[arg-type]
        assert tunnel is not None
        assert instances.take(tunnel)
        instances.give_back(tunnel)
        await trio.testing.wait_all_tasks_blocked()
        assert loads(alone) == []
        nursery.cancel_scope.cancel()


async def test_a_refused_tunnel_hears_once_a_slot_is_free_even_alone() -> None:
    # Alone too: the server hands a slot on as soon as it resets a stream, which may be before
    # this agent's stream in it ended; the refused request waits for this Load.
    instances = Instances(max_concurrency=1)
    alone = FakeSession()
    async with trio.open_nursery() as nursery:
        await nursery.start(instances.run, await run(instances, []))
        tunnel = instances.attach("", alone, ())  # type: ignore[arg-type]
        assert tunnel is not None
        assert instances.take(tunnel)
        assert not instances.take(tunnel)
        await trio.testing.wait_all_tasks_blocked()
        assert loads(alone) == []  # still full: nothing to say yet
        instances.give_back(tunnel)
        await trio.testing.wait_all_tasks_blocked()
        assert loads(alone) == [0]
        assert instances.take(tunnel)
        instances.give_back(tunnel)
        await trio.testing.wait_all_tasks_blocked()
        assert loads(alone) == [0]  # once per refusal
        nursery.cancel_scope.cancel()


async def test_an_instance_is_dialled_while_a_live_tunnel_lists_it() -> None:
    instances = Instances(max_concurrency=1)
    dialled: list[str] = []
    a = FakeSession()
    async with trio.open_nursery() as nursery:
        await nursery.start(instances.run, await run(instances, dialled))
        tunnel = instances.attach("a", a, (("a", "ws://a"), ("b", "ws://b")))  # type: ignore[arg-type]
        assert tunnel is not None
        await trio.testing.wait_all_tasks_blocked()
        assert instances.wanted("b")
        instances.listed(tunnel, (("a", "ws://a"),))  # b left (or drains)
        assert not instances.wanted("b")
        assert instances.attach("a", FakeSession(), ()) is None  # a has a live tunnel already  # type: ignore[arg-type]
        a.closed = True
        instances.detach(tunnel)
        assert not instances.wanted("a")  # nobody lists anything any more
        nursery.cancel_scope.cancel()
