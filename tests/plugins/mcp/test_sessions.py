"""The MCP relay's call timers and session table (nfrx.plugins.mcp.sessions), on a mock clock."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from nfrx.plugins.mcp.sessions import Call, EndedBy, McpSession, RelayState, credential_hash


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def _call(idle: float | None, total: float, session: str | None = "s1") -> Call:
    return Call("tools/call", "1", session, idle, trio.current_time() + total)


async def test_inactivity_ends_a_quiet_call(autojump_clock: trio.testing.MockClock) -> None:
    call = _call(idle=30, total=600)
    with call.watch() as scope:
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert call.timed_out
    assert call.ended_by is None


async def test_activity_moves_the_deadline_until_the_absolute_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = _call(idle=30, total=100)
    start = trio.current_time()

    async def busy_provider() -> None:
        while True:
            await trio.sleep(20)
            call.touch()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(busy_provider)
        with call.watch() as scope:
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    assert scope.cancelled_caught
    # Touched every 20 s, it outlived several 30 s windows, but not the absolute limit.
    assert trio.current_time() - start == pytest.approx(100)
    assert call.timed_out


async def test_exempt_calls_have_no_inactivity_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = _call(idle=None, total=math.inf)
    with trio.move_on_after(10_000) as outer, call.watch():
        await trio.sleep_forever()
    assert outer.cancelled_caught
    assert not call.timed_out


async def test_stop_cancels_the_wait_and_says_why() -> None:
    call = _call(idle=30, total=600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.lowlevel.checkpoint)
        with call.watch() as scope:
            call.stop(EndedBy.CLIENT_CANCELLED)
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert call.ended_by == EndedBy.CLIENT_CANCELLED
    assert not call.timed_out
    call.stop(EndedBy.SESSION_ENDED)  # the first reason stays
    assert call.ended_by == EndedBy.CLIENT_CANCELLED
    with call.watch() as again:  # a stopped call never waits again
        await trio.sleep_forever()
    assert again.cancelled_caught


async def test_session_table_routes_cancellation_and_activity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    relay = RelayState(tunnel=None)  # type: ignore[arg-type]  # the tunnel is not used here
    relay.sessions["s1"] = McpSession("s1", credential_hash("k"))
    call = _call(idle=30, total=600)
    stream = Call("", None, "s1", None, math.inf, stream=True)
    other = _call(idle=30, total=600, session=None)
    reply = Call("", None, "s1", None, math.inf)  # a client's reply to a provider request
    for each in (call, stream, other, reply):
        relay.add(each)
    assert (relay.requests, relay.streams) == (2, 1)
    assert relay.by_id == {("s1", "1"): call}

    await trio.sleep(25)
    relay.touch_session("s1")  # a client's reply in the session
    assert call.idle_deadline == pytest.approx(trio.current_time() + 30)
    assert other.idle_deadline < call.idle_deadline

    assert relay.idle_sessions(10) == []  # busy sessions are never reaped
    relay.end_session("s1")
    assert call.ended_by == stream.ended_by == EndedBy.SESSION_ENDED
    assert other.ended_by is None
    for each in (call, stream, other, reply):
        relay.remove(each)
    assert relay.calls == set()
    assert relay.by_id == {}


async def test_idle_sessions_are_removed(autojump_clock: trio.testing.MockClock) -> None:
    relay = RelayState(tunnel=None)  # type: ignore[arg-type]
    relay.sessions["old"] = McpSession("old", "")
    await trio.sleep(100)
    relay.sessions["new"] = McpSession("new", "")
    reaped = relay.idle_sessions(60)
    assert [s.id for s in reaped] == ["old"]
    assert list(relay.sessions) == ["new"]


def test_credentials_are_hashed() -> None:
    assert credential_hash(None) == credential_hash("") == ""
    assert credential_hash("a") != credential_hash("b")
    assert "secret-key" not in credential_hash("secret-key")
    assert len(credential_hash("secret-key")) == 64
