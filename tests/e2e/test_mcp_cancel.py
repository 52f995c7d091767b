"""Cancellation end to end (reference section 5.3): the matrix

    {HTTP provider legacy, HTTP provider modern, stdio provider} x
    {client disconnect, relay timeout, client notifications/cancelled, tunnel drop}

against real processes (server, agent, fixture provider). For each cell: the provider's work is
really cancelled (its ``slow`` tool writes ``cancelled TAG`` to the events file; waited for with a
generous bound, never timed), nothing for that request id reaches the client after the relay's
error, and the next call on the same session works (after a tunnel drop: a fresh session through
the restarted agent).

Cells that do not exist: a POSTed ``notifications/cancelled`` is a legacy mechanism (on modern
Streamable HTTP, closing the stream is the cancel, which is the disconnect cell). After SIGKILL of
the agent, a *legacy HTTP* provider cannot be told to stop (the spec says a dropped connection is
not a cancel, and the dead agent posts nothing), so that cell asserts the client side only and
that the provider's tool ran out its course.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, run_server
from tests.fixtures.mcp_raw import LegacySession, ModernClient, for_id, result_text
from tests.fixtures.mcp_stack import Provider, run_http_provider, run_mcp_agent

pytestmark = pytest.mark.e2e

WAIT = 30.0  # generous bound for provider-side effects; never asserted as a duration
RELAY = "cancel"


@attrs.define(eq=False)
class Stack:
    server: Server
    provider: Provider
    provider_url: str | None
    events: Path
    agent: NfrxProcess
    stack: AsyncExitStack

    @property
    def url(self) -> str:
        return f"{self.server.url}/api/mcp/id/{RELAY}"

    def lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    async def wait_event(self, line: str) -> None:
        with trio.fail_after(WAIT):
            while line not in self.lines():  # noqa: ASYNC110 (another process writes the file)
                await trio.sleep(0.05)

    async def restart_agent(self) -> None:
        self.agent = await self.stack.enter_async_context(
            run_mcp_agent(self.server, RELAY, self.provider, self.provider_url, self.events)
        )


@asynccontextmanager
async def stack(
    provider: Provider, tmp_path: Path, server_env: dict[str, str]
) -> AsyncIterator[Stack]:
    events = tmp_path / "events.txt"
    async with AsyncExitStack() as exits:
        server = await exits.enter_async_context(run_server(env=server_env))
        url = None
        if provider == "http":
            url = await exits.enter_async_context(run_http_provider(events))
        agent = await exits.enter_async_context(run_mcp_agent(server, RELAY, provider, url, events))
        yield Stack(server, provider, url, events, agent, exits)


WIRES = ["http-legacy", "http-modern", "stdio"]


@asynccontextmanager
async def client(s: Stack, wire: str) -> AsyncIterator[Any]:
    auth = {"Authorization": f"Bearer {s.server.api_key}"}
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10)) as http:
        if wire == "http-modern":
            yield ModernClient(http, s.url, auth)
        else:
            session = LegacySession(http, s.url, auth)
            await session.initialize()
            yield session


async def first_progress(exchange: Any) -> None:
    """Read until the first progress notification: the tool is running."""
    assert exchange.response.status_code == 200, await exchange.response.aread()
    with trio.fail_after(WAIT):
        while True:
            message = await exchange.next_message()
            assert message is not None, f"stream ended before any progress: {exchange.messages}"
            if message.get("method") == "notifications/progress":
                return


async def next_call_works(c: Any) -> None:
    async with c.call(100, "echo", {"text": "still alive"}) as exchange:
        messages = await exchange.until_end()
    assert exchange.response.status_code == 200
    assert [result_text(m) for m in for_id(exchange.messages or messages, 100)] == ["still alive"]


def provider_for(wire: str) -> Provider:
    return "stdio" if wire == "stdio" else "http"


# ---- client disconnect ------------------------------------------------------------------------


async def cancelled_by_client(s: Stack) -> None:
    """The server logged the call as the client's cancellation, and counted no failure."""
    await s.server.proc.wait_for_line(
        rf"method=tools/call relay={RELAY} status=- cancelled by client ", timeout=WAIT
    )
    async with httpx.AsyncClient() as http:
        state = await http.get(f"{s.server.url}/api/state", headers=s.server.headers())
    (agent,) = state.json()["plugins"]["mcp"]["agents"]
    assert agent["failures_total"] == 0, agent


@pytest.mark.parametrize("wire", WIRES)
async def test_client_disconnect_cancels_the_provider_work(wire: str, tmp_path: Path) -> None:
    async with stack(provider_for(wire), tmp_path, {}) as s, client(s, wire) as c:
        async with c.call(1, "slow", {"tag": "gone", "seconds": 30}, token="t1") as exchange:
            await first_progress(exchange)
        # Leaving the block closed the response: the client is gone.
        await s.wait_event("cancelled gone")
        assert "done gone" not in s.lines()
        await cancelled_by_client(s)
        await next_call_works(c)


# ---- relay timeout -----------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_relay_timeout_answers_one_error_and_cancels(wire: str, tmp_path: Path) -> None:
    # No progress token: the tool is silent, so the 1 s inactivity timeout runs out.
    async with (
        stack(provider_for(wire), tmp_path, {"MCP_CALL_TIMEOUT": "1"}) as s,
        client(s, wire) as c,
    ):
        async with c.call(7, "slow", {"tag": "late", "seconds": 30}) as exchange:
            with trio.fail_after(WAIT):
                messages = await exchange.until_end()
        assert exchange.response.status_code == 200
        answers = for_id(messages, 7)
        assert len(answers) == 1, messages
        error = answers[0]["error"]
        assert error["code"] == -32603
        assert error["data"]["nfrx"]["code"] == "MCP_TIMEOUT"
        assert messages[-1] is answers[0], "nothing may follow the relay's error"
        await s.wait_event("cancelled late")
        assert "done late" not in s.lines()
        await next_call_works(c)


# ---- client notifications/cancelled (legacy) ----------------------------------------------------


@pytest.mark.parametrize("wire", ["http-legacy", "stdio"])
async def test_client_cancel_notification_cancels(wire: str, tmp_path: Path) -> None:
    async with stack(provider_for(wire), tmp_path, {}) as s, client(s, wire) as c:
        async with c.call(9, "slow", {"tag": "called-off", "seconds": 30}, token="t9") as exchange:
            await first_progress(exchange)
            accepted = await c.cancel(9)
            assert accepted.status_code == 202, accepted.text
            await s.wait_event("cancelled called-off")
            with trio.fail_after(WAIT):
                rest = await exchange.until_end()
        # The spec: the receiver sends no response for a cancelled request (the SDK provider's
        # own -32800 "Request cancelled" must be dropped by the relay too).
        assert for_id(rest, 9) == [], rest
        assert "done called-off" not in s.lines()
        await cancelled_by_client(s)
        await next_call_works(c)


# ---- tunnel drop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_tunnel_drop_fails_the_call_and_a_new_session_works(
    wire: str, tmp_path: Path
) -> None:
    async with stack(provider_for(wire), tmp_path, {}) as s:
        async with client(s, wire) as c:
            async with c.call(5, "slow", {"tag": "orphan", "seconds": 3}, token="t5") as exchange:
                await first_progress(exchange)
                s.agent.signal(signal.SIGKILL)
                with trio.fail_after(WAIT):
                    rest = await exchange.until_end()
            answers = for_id(exchange.messages, 5)
            assert len(answers) <= 1, rest
            if answers:  # a final SSE error event, nothing after it
                assert answers[0]["error"]["code"] == -32603
                assert answers[0]["error"]["data"]["nfrx"]["code"] == "MCP_PROVIDER_UNAVAILABLE"
                assert exchange.messages[-1] is answers[0]
        if wire == "http-legacy":
            # Nobody is left to cancel it: a legacy provider finishes the work.
            await s.wait_event("done orphan")
        else:
            await s.wait_event("cancelled orphan")
        await s.restart_agent()
        async with client(s, wire) as fresh:
            await next_call_works(fresh)
