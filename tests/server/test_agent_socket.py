"""The agents' socket, its pure parts: how the server words an agent's state in its log, and an
agent's Status frames as the server applies them (no I/O: limits, no-op repeats, logs). The socket
itself is tested end to end."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from quart import websocket
from quart.wrappers import Websocket
from quart_trio import QuartTrio
from werkzeug.local import LocalProxy

from nfrx.plugins import plugin_class
from nfrx.protocol import Status
from nfrx.server.agent_socket import STATUS_LOG_BURST, StatusUpdates, describe
from nfrx.server.announcements import AnnouncementLimits, OverLimit
from nfrx.server.registry import AgentRegistry
from tests.server.test_scheduler import agent


@pytest.mark.parametrize(
    ("kind", "models", "expected"),
    [
        ("llm", ("a", "b"), "ready, 2 models, capacity 4"),
        ("llm", (), "ready, 0 models, capacity 4"),
        ("asr", ("whisper-1",), "ready, 1 model, capacity 4"),
        ("docling", ("docling",), "ready, capacity 4"),  # its pseudo-model is no news
        ("mcp", (), "ready, capacity 4"),  # relays serve no models
    ],
)
def test_model_counts_only_for_kinds_with_models(
    kind: str, models: tuple[str, ...], expected: str
) -> None:
    named = plugin_class(kind).serves_models
    assert describe("ready", models, 4, named_models=named) == expected


# -- Status frames ------------------------------------------------------------------------------


def status(capacity: int, models: tuple[str, ...] = ("m",)) -> Status:
    return Status(models=models, max_concurrency=capacity, status="ready")


def setup() -> tuple[StatusUpdates, list[int]]:
    registry = AgentRegistry()
    record = agent("a", models=("m",))
    registry.add(record)
    changes: list[int] = []
    registry.subscribe(lambda: changes.append(record.max_concurrency))
    gateway = SimpleNamespace(registry=registry)
    return StatusUpdates(gateway, record, AnnouncementLimits(max_models=2)), changes  # type: ignore[arg-type]


async def test_a_repeated_status_changes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    updates, changes = setup()
    for _ in range(100):
        updates.apply(status(1))  # what the server knows already
    assert changes == []
    updates.apply(status(3))
    assert changes == [3]
    assert updates.record.max_concurrency == 3


async def test_a_status_over_the_limits_is_refused_and_not_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    updates, changes = setup()
    with pytest.raises(OverLimit, match="3 models announced; at most 2 accepted"):
        updates.apply(status(1, models=("a", "b", "c")))
    assert changes == []
    assert updates.record.models == ("m",)


async def test_changes_are_logged_in_a_burst_then_once_a_second(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nfrx.agents")
    updates, _ = setup()
    for capacity in range(2, 52):
        updates.apply(status(capacity))
    levels = [record.levelno for record in caplog.records]
    assert levels == [logging.INFO] * STATUS_LOG_BURST + [logging.DEBUG] * (50 - STATUS_LOG_BURST)
    caplog.clear()
    await trio.sleep(1)
    updates.apply(status(100))
    updates.apply(status(101))
    assert [record.levelno for record in caplog.records] == [logging.INFO, logging.DEBUG]


# -- the Quart internal the socket relies on ------------------------------------------------------


async def test_quarts_websocket_proxy_yields_the_connection_object() -> None:
    """The socket hands the tunnel the object behind Quart's ``websocket`` context proxy
    (werkzeug's ``LocalProxy._get_current_object``), not the proxy."""
    app = QuartTrio("guard")
    seen: list[object] = []

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        seen.append(websocket._get_current_object())
        await websocket.send("seen")

    with trio.fail_after(10):
        async with app.test_app() as test_app, test_app.test_client().websocket("/ws") as client:
            assert await client.receive() == "seen"
    [connection] = seen
    assert isinstance(connection, Websocket)
    assert not isinstance(connection, LocalProxy)
