"""One public MCP exchange through the relay (:class:`nfrx.plugins.mcp.relay.McpExchange`), in
process: the real app on loopback, a scripted agent end of an in-memory tunnel (``relay_harness``).

What is checked is what the operator and the client see when an exchange ends: the answer, the
reset the agent receives (so it cancels the provider's work), the access-log line, the agent's
counters in the registry and the ``nfrx_mcp_exchanges`` outcome. A call the client cancelled
(it left, it sent ``notifications/cancelled``, it deleted its session) is not a provider failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.relay import tunnel_error
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed
from tests.plugins.mcp.relay_harness import (
    RELAY,
    Relay,
    access_lines,
    progress_then_wait,
    request,
    reset_upstream_error,
    serve_relay,
)
from tests.server.test_metrics import samples

CALL = request(5, "tools/call", {"name": "slow", "_meta": {"progressToken": "t"}})


@pytest.fixture(autouse=True)
def _access_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nfrx.mcp")


def outcomes(relay: Relay) -> dict[str, float]:
    """``nfrx_mcp_exchanges_total`` by outcome, for the relay's requests."""
    found: dict[str, float] = {}
    for (name, labels), value in samples(relay.gateway).items():
        label = dict(labels)
        if name == "nfrx_mcp_exchanges_total" and label["kind"] == wire.Kind.REQUEST:
            found[label["outcome"]] = value
    return found


def counters(relay: Relay) -> tuple[int, int, int]:
    record = relay.record
    return record.processed_total, record.failures_total, record.cancelled_total


@asynccontextmanager
async def first_progress(
    client: httpx.AsyncClient, relay: Relay, **headers: str
) -> AsyncIterator[AsyncIterator[str]]:
    """A ``tools/call`` whose SSE answer has started (its first event read); yields the rest of
    its lines."""
    async with client.stream(
        "POST", relay.url, content=CALL, headers=relay.headers(**headers)
    ) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data:"):
                break
        yield lines


async def data_lines(lines: AsyncIterator[str]) -> list[str]:
    return [line async for line in lines if line.startswith("data:")]


async def test_a_client_that_leaves_is_cancelled_not_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_relay(progress_then_wait) as relay, httpx.AsyncClient() as client:
        async with first_progress(client, relay):
            pass  # leaving the block closes the connection mid-stream
        await relay.agent.reset.wait()
        assert relay.agent.resets == [ResetCode.CANCELLED]
        assert counters(relay) == (0, 0, 1)
        assert outcomes(relay) == {"cancelled": 1}
    (line,) = access_lines(caplog)
    assert "method=tools/call relay=r1 status=- cancelled by client duration=" in line, line
    assert "ended_by" not in line, line


async def test_a_clients_own_cancel_is_cancelled_not_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_relay(progress_then_wait) as relay, httpx.AsyncClient() as client:
        relay.open_session()
        async with first_progress(client, relay, mcp_session_id="s1") as lines:
            cancel = {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 5},
            }
            posted = await client.post(
                relay.url, content=json.dumps(cancel), headers=relay.headers(mcp_session_id="s1")
            )
            assert posted.status_code == 202  # the agent relayed it: its script answered 202
            rest = await data_lines(lines)
        assert rest == []  # nothing for the cancelled request, not even an error
        await relay.agent.reset.wait()
        assert relay.agent.resets == [wire.CLIENT_CANCELLED]
        assert counters(relay) == (0, 0, 1)
        assert outcomes(relay) == {"client_cancelled": 1}
    call_line = next(line for line in access_lines(caplog) if "method=tools/call" in line)
    assert "status=- cancelled by client duration=" in call_line, call_line
    assert " ended_by=client_cancelled " in call_line, call_line


async def test_a_deleted_session_cancels_its_calls(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_relay(progress_then_wait) as relay, httpx.AsyncClient() as client:
        state = relay.open_session()
        async with first_progress(client, relay, mcp_session_id="s1") as lines:
            state.end_session("s1")  # what a DELETE that the provider accepted does
            rest = await data_lines(lines)
        (error,) = [json.loads(line[5:]) for line in rest]
        assert error["id"] == 5
        assert error["error"]["data"]["nfrx"]["code"] == "MCP_SESSION_NOT_FOUND"
        assert counters(relay) == (0, 0, 1)
        assert outcomes(relay) == {"session_ended": 1}
    (line,) = access_lines(caplog)
    assert "status=- cancelled by client duration=" in line, line
    assert " ended_by=session_ended " in line, line


async def test_a_stream_the_client_closes_is_logged_as_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_relay(progress_then_wait) as relay, httpx.AsyncClient() as client:
        relay.open_session()
        headers = relay.headers(mcp_session_id="s1")
        async with client.stream("GET", relay.url, headers=headers) as response:
            assert response.status_code == 200
        await relay.agent.reset.wait()
    (line,) = access_lines(caplog)
    assert f"GET /api/mcp/id/{RELAY} relay={RELAY} status=200 closed by client " in line, line


async def test_a_provider_failure_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_relay(reset_upstream_error) as relay, httpx.AsyncClient() as client:
        answer = await client.post(relay.url, content=CALL, headers=relay.headers())
        assert answer.status_code == 200
        error = answer.json()["error"]
        assert (answer.json()["id"], error["code"]) == (5, wire.INTERNAL_ERROR)
        assert error["data"]["nfrx"]["code"] == "MCP_UPSTREAM_ERROR"
        assert error["message"].startswith("nfrx: the provider failed")
        assert counters(relay) == (0, 1, 0)
        assert outcomes(relay) == {"error": 1}
    (line,) = access_lines(caplog)
    assert "relay=r1 status=- duration=" in line, line


async def test_a_silent_provider_times_out_as_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    async def silent(stream: Any, agent: Any) -> None:
        await trio.sleep_forever()

    async with (
        serve_relay(silent, mcp_call_timeout=0.2) as relay,
        httpx.AsyncClient() as client,
    ):
        answer = await client.post(relay.url, content=CALL, headers=relay.headers())
        assert answer.status_code == 200
        error = answer.json()["error"]
        assert error["data"]["nfrx"]["code"] == "MCP_TIMEOUT"
        assert error["message"] == "nfrx: no response within 0.2 s; request cancelled"
        await relay.agent.reset.wait()
        assert relay.agent.resets == [ResetCode.TIMEOUT]
        assert counters(relay) == (0, 1, 0)
        assert outcomes(relay) == {"timeout": 1}


async def test_a_complete_answer_is_a_success(caplog: pytest.LogCaptureFixture) -> None:
    async def answer(stream: Any, agent: Any) -> None:
        await stream.send_response(200, (("content-type", "text/event-stream"),))
        reply = {"jsonrpc": "2.0", "id": 5, "result": {"content": []}}
        await stream.send_data(b"event: message\ndata: " + json.dumps(reply).encode() + b"\n\n")
        await stream.end()

    async with serve_relay(answer) as relay, httpx.AsyncClient() as client:
        response = await client.post(relay.url, content=CALL, headers=relay.headers())
        assert response.status_code == 200
        assert '"result":' in response.text
        assert counters(relay) == (1, 0, 0)
        assert outcomes(relay) == {"success": 1}
    (line,) = access_lines(caplog)
    assert "relay=r1 status=200 duration=" in line, line


def reset(code: str, message: str = "") -> StreamReset:
    return StreamReset(code, message, by_peer=True)


UNAVAILABLE = ("MCP_PROVIDER_UNAVAILABLE", "the provider is not available", True)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (TunnelClosed("gone"), ("MCP_PROVIDER_UNAVAILABLE", "the relay disconnected", True)),
        (reset(ResetCode.TIMEOUT), ("MCP_TIMEOUT", "the relay gave up waiting", True)),
        (reset(ResetCode.UPSTREAM_UNREACHABLE, "refused"), UNAVAILABLE),
        (reset(ResetCode.DRAINING), UNAVAILABLE),
        (reset(ResetCode.OVERLOADED), UNAVAILABLE),
        (reset(ResetCode.UPSTREAM_ERROR), ("MCP_UPSTREAM_ERROR", "the provider failed", False)),
    ],
)
def test_tunnel_errors_say_whose_fault_and_whether_to_retry(
    failure: StreamReset | TunnelClosed, expected: tuple[str, str, bool]
) -> None:
    code, message, retryable = expected
    body = json.loads(tunnel_error("3", failure, "req-1"))
    assert body["id"] == 3
    assert body["error"]["message"].startswith(f"nfrx: {message}")
    assert body["error"]["data"]["nfrx"] == {
        "code": code,
        "retryable": retryable,
        "req_id": "req-1",
    }
