"""Clients that behave like OpenAI's Responses ``mcp`` tool and ChatGPT (reference section 10):
no GET stream, no ``MCP-Protocol-Version`` header (so 2025-03-26 is assumed), a new session per
call that is never closed, and a DELETE followed by reuse of the dead session (which must be a
404 so the client re-initializes, and a fresh ``initialize`` then works). For the HTTP and the
stdio fixture provider, through real processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.mcp_raw import ACCEPT, LegacySession, for_id, request, result_text
from tests.fixtures.mcp_stack import Provider, Relay, run_relay

pytestmark = pytest.mark.e2e

OPENAI_VERSION = "2025-03-26"


@pytest.fixture(params=["http", "stdio"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relay]:
    provider: Provider = request.param
    async with run_relay(provider, tmp_path) as r:
        yield r


class OpenAiLike(LegacySession):
    """Initializes at 2025-03-26 and never sends ``MCP-Protocol-Version``."""

    def session_headers(self, **extra: str) -> dict[str, str]:
        return self.headers(**{"Mcp-Session-Id": self.session_id}, **extra)


async def call_echo(session: LegacySession, id_: int, text: str) -> None:
    async with session.call(id_, "echo", {"text": text}) as exchange:
        await exchange.until_end()
    assert exchange.response.status_code == 200, exchange.messages
    assert [result_text(m) for m in for_id(exchange.messages, id_)] == [text]


async def test_no_get_and_no_protocol_version_header(relay: Relay) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        session = OpenAiLike(http, relay.url, relay.headers(), version=OPENAI_VERSION)
        init = await session.initialize()
        assert init["result"]["protocolVersion"] == OPENAI_VERSION
        listed = await session.post(request("tools/list", 1), session.session_headers())
        assert listed.response.status_code == 200
        names = {t["name"] for t in for_id(listed.messages, 1)[0]["result"]["tools"]}
        assert {"echo", "slow"} <= names
        await call_echo(session, 2, "no header needed")


async def test_delete_then_reuse_is_404_and_a_fresh_session_works(relay: Relay) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        session = OpenAiLike(http, relay.url, relay.headers(), version=OPENAI_VERSION)
        await session.initialize()
        await call_echo(session, 1, "before delete")
        deleted = await session.delete()
        assert deleted.status_code in (200, 202, 204), deleted.text

        reused = await session.post(
            request("tools/call", 2, {"name": "echo", "arguments": {"text": "x"}}),
            session.session_headers(),
        )
        assert reused.response.status_code == 404
        body = reused.messages[0]
        assert body["jsonrpc"] == "2.0"
        assert body["id"] == 2
        assert body["error"]["code"] == -32603
        assert body["error"]["data"]["nfrx"]["code"] == "MCP_SESSION_NOT_FOUND"

        await session.initialize()
        await call_echo(session, 3, "after a fresh initialize")


async def test_a_session_per_call_never_closed(relay: Relay) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        sessions = []
        for n in range(5):
            session = OpenAiLike(http, relay.url, relay.headers(), version=OPENAI_VERSION)
            await session.initialize()
            await call_echo(session, n, f"call {n}")
            sessions.append(session.session_id)
    assert len(set(sessions)) == 5


async def test_a_get_probe_without_a_session_is_answered_at_once(relay: Relay) -> None:
    """ChatGPT GETs first: the relay must answer (not hang); the provider's 4xx passes through."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(relay.url, headers={"Accept": ACCEPT, **relay.headers()})
    assert response.status_code in (400, 405), response.text
