"""What an instance tells agents about itself and its fellows (no I/O)."""

from __future__ import annotations

import socket

import pytest

from nfrx.cluster.members import Membership, advertise_url
from nfrx.cluster.store import Beat, MemberRecord
from nfrx.config.model import ServerConfig


@pytest.mark.parametrize(
    ("settings", "binds", "expected"),
    [
        ({}, ["http://127.0.0.1:8080"], "ws://127.0.0.1:8080"),
        (
            {"agent_port": 9001},
            ["http://127.0.0.1:8080", "http://127.0.0.1:9001"],
            "ws://127.0.0.1:9001",
        ),
        ({"advertise_url": "wss://nfrx-1.example.com/"}, [], "wss://nfrx-1.example.com"),
        ({"host": "::1"}, ["http://[::1]:8080"], "ws://[::1]:8080"),
    ],
)
def test_the_advertise_url(settings: dict[str, object], binds: list[str], expected: str) -> None:
    assert advertise_url(ServerConfig(**settings), binds) == expected  # type: ignore[arg-type]


def test_every_interface_advertises_the_machine_name() -> None:
    url = advertise_url(ServerConfig(host="0.0.0.0"), ["http://0.0.0.0:8080"])
    assert url == f"ws://{socket.getfqdn()}:8080"


def record(instance: str, *, draining: bool = False) -> MemberRecord:
    return MemberRecord(id=instance, url=f"ws://{instance}", started_at=0, draining=draining)


def test_agents_hear_of_every_instance_but_the_draining_ones_once_per_change() -> None:
    membership = Membership(record("a"))
    assert membership.news_for_agents() == (("a", "ws://a"),)
    beat = Beat(
        members={"a": record("a"), "b": record("b"), "c": record("c", draining=True)},
        agents={},
        dead=(),
        lost=False,
    )
    assert membership.update(beat) == ({"b", "c"}, set())
    assert membership.news_for_agents() == (("a", "ws://a"), ("b", "ws://b"))
    assert membership.news_for_agents() is None
    assert membership.update(
        Beat(members={"a": record("a")}, agents={}, dead=("b",), lost=False)
    ) == (
        set(),
        {"b", "c"},
    )
    assert membership.news_for_agents() == (("a", "ws://a"),)
