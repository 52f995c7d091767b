"""When the agent tells an HTTP provider that a request was abandoned, the pure parts
(:mod:`nfrx.plugins.mcp.http_cancel`). The POST itself, against a real provider, is tested in
``test_agent_http.py``."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing

from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.http_cancel import (
    FinalWatch,
    IdleClock,
    cancel_reason,
    cancelled_notification,
    valid_id,
)
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed


def event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\r\n\r\n"


def test_the_watch_sees_the_final_response_across_chunks() -> None:
    watch = FinalWatch("7")
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
    other = {"jsonrpc": "2.0", "id": 8, "result": {}}
    watch.feed(event(progress) + event(other))
    assert not watch.answered  # progress, and a response for another id
    final = event({"jsonrpc": "2.0", "id": 7, "result": {}})
    watch.feed(final[:10])
    assert not watch.answered
    watch.feed(final[10:])
    assert watch.answered


def test_a_watch_without_an_id_never_answers() -> None:
    watch = FinalWatch(None)
    watch.feed(event({"jsonrpc": "2.0", "id": 7, "result": {}}))
    assert not watch.answered


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7", "7"), ('"a"', '"a"'), ("1.5", None), ("true", None), ("null", None), ("{", None)],
)
def test_only_string_and_integer_ids_are_spliced(text: str, expected: str | None) -> None:
    assert valid_id(text) == expected


def test_the_notification_carries_the_id_verbatim() -> None:
    body = cancelled_notification('"a\\u00e9"', 'nfrx: "why"')
    assert body.startswith(b'{"jsonrpc":"2.0","method":"notifications/cancelled"')
    assert b'"requestId":"a\\u00e9"' in body
    assert json.loads(body)["params"]["reason"] == 'nfrx: "why"'


@pytest.mark.parametrize(
    ("failure", "idle_fired", "reason", "tell"),
    [
        (None, True, "nfrx: the provider was inactive past the call timeout", True),
        (StreamReset(wire.CLIENT_CANCELLED, "", by_peer=True), False, "", False),
        (StreamReset(ResetCode.TIMEOUT, "", by_peer=True), False, "nfrx: the call timed out", True),
        (
            StreamReset(ResetCode.CANCELLED, "", by_peer=True),
            False,
            "nfrx: the request was abandoned (cancelled)",
            True,
        ),
        (TunnelClosed("gone"), False, "nfrx: the relay lost its tunnel to the server", True),
        (None, False, "nfrx: the call reached its time limit", True),
    ],
)
def test_why_a_request_was_abandoned_and_whether_to_say_so(
    failure: StreamReset | TunnelClosed | None, idle_fired: bool, reason: str, tell: bool
) -> None:
    stream = cast("Any", SimpleNamespace(failure=failure))
    assert cancel_reason(stream, idle_fired) == (reason, tell)


async def test_the_idle_clock_pauses_while_the_agent_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = IdleClock(10.0)
    start = trio.current_time()
    assert clock.scope.deadline == start + 10
    clock.pause()
    await trio.sleep(60)
    clock.bump()  # activity while paused changes nothing
    assert clock.scope.deadline == float("inf")
    clock.resume()
    assert clock.scope.deadline == trio.current_time() + 10
