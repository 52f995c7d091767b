"""The MCP relay's HTTP provider backend (:class:`nfrx.plugins.mcp.agent.McpHttpBackend`) against
a real MCP provider (the ``mcp`` SDK under uvicorn, in a subprocess on loopback), through an
in-memory tunnel whose server end plays the nfrx server's part.

Provider-side evidence (what it received, whether its tool saw cancellation) comes from the
provider's own record files, never from the agent under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from nfrx.agent.runtime import BackendUnavailable
from nfrx.config.model import McpAgentConfig
from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.agent import McpHttpBackend, http_client, prm_urls, public_prm_url
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed
from nfrx.transport.streams import IncomingStream, OutgoingStream
from tests.transport.helpers import Tunnel, open_tunnel

ROOT = Path(__file__).resolve().parents[3]
ACCEPT = ("accept", "application/json, text/event-stream")
JSON = ("content-type", "application/json")
LEGACY = "2025-11-25"
MODERN = "2026-07-28"


@attrs.define
class Provider:
    url: str
    record: Path
    headers: Path

    def lines(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def requests(self) -> list[dict[str, Any]]:
        if not self.headers.exists():
            return []
        return [json.loads(line) for line in self.headers.read_text().splitlines()]

    async def wait_for(self, line: str) -> None:
        """Wait (bounded) until the provider recorded ``line`` (another process's file: polled)."""
        with trio.fail_after(20):
            while line not in self.lines():  # noqa: ASYNC110
                await trio.sleep(0.02)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    work = tmp_path_factory.mktemp("mcp-provider")
    record, headers = work / "record.txt", work / "headers.jsonl"
    env = {**os.environ, "NFRX_TEST_RECORD": str(record), "NFRX_TEST_HEADERS": str(headers)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.mcp_http_provider", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        port = int(line.split()[-1])
        yield Provider(f"http://127.0.0.1:{port}/mcp", record, headers)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def config(url: str, **changes: Any) -> McpAgentConfig:
    return McpAgentConfig(mcp_http_url=url, mcp_http_timeout=5.0, **changes)


@asynccontextmanager
async def relay(url: str, **changes: Any) -> AsyncIterator[tuple[Tunnel, McpHttpBackend]]:
    """A backend for ``url`` behind an in-memory tunnel."""
    cfg = config(url, **changes)
    async with http_client(cfg) as client:
        backend = McpHttpBackend(cfg, client)

        async def handler(stream: IncomingStream) -> None:
            await backend.handle(stream)

        async with open_tunnel(handler) as tunnel:
            yield tunnel, backend


def meta(
    *,
    era: str = wire.LEGACY,
    kind: str = wire.Kind.REQUEST,
    request_id: str | None = None,
    method: str = "",
    idle: float | None = None,
) -> list[tuple[str, str]]:
    pairs = [(wire.Meta.ERA, era), (wire.Meta.KIND, kind)]
    if request_id is not None:
        pairs.append((wire.Meta.ID, request_id))
    if method:
        pairs.append((wire.Meta.METHOD, method))
    if idle is not None:
        pairs.append((wire.Meta.IDLE, f"{idle:g}"))
    return pairs


def message(request_id: int | str | None, method: str, params: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body).encode()


def open_post(
    tunnel: Tunnel, body: bytes, headers: list[tuple[str, str]], *, timeout: float | None = None
) -> OutgoingStream:
    stream = tunnel.server.open_stream("POST", "/", tuple(headers), timeout=timeout)
    return stream


async def exchange(
    tunnel: Tunnel, body: bytes, headers: list[tuple[str, str]]
) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` through the tunnel; the whole answer."""
    stream = open_post(tunnel, body, headers)
    await stream.send_data(body, end=True)
    response = await stream.receive_response()
    data = await stream.receive_all(10_000_000)
    return response.status, dict(response.headers), data


def events(data: bytes) -> list[dict[str, Any]]:
    parser = wire.SseParser(1_000_000)
    return [json.loads(e.data) for e in parser.feed(data) if e.is_message]


async def initialize(tunnel: Tunnel) -> str:
    """A legacy session (initialize + notifications/initialized); its id."""
    body = message(
        1,
        "initialize",
        {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    )
    status, headers, _ = await exchange(
        tunnel, body, [ACCEPT, JSON, *meta(request_id="1", method="initialize")]
    )
    assert status == 200
    session = headers["mcp-session-id"]
    status, _, data = await exchange(
        tunnel,
        message(None, "notifications/initialized", {}),
        [
            ACCEPT,
            JSON,
            ("mcp-session-id", session),
            ("mcp-protocol-version", LEGACY),
            *meta(kind=wire.Kind.NOTIFICATION, method="notifications/initialized"),
        ],
    )
    assert (status, data) == (202, b"")
    return session


def legacy_headers(session: str) -> list[tuple[str, str]]:
    return [ACCEPT, JSON, ("mcp-session-id", session), ("mcp-protocol-version", LEGACY)]


def call(request_id: int, tool: str, arguments: dict[str, Any], **meta_: Any) -> bytes:
    return message(request_id, "tools/call", {"name": tool, "arguments": arguments, "_meta": meta_})


def modern_call(request_id: int, tool: str, arguments: dict[str, Any]) -> bytes:
    return call(
        request_id,
        tool,
        arguments,
        **{
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    )


def modern_headers(tool: str) -> list[tuple[str, str]]:
    return [
        ACCEPT,
        JSON,
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
    ]


async def echo_works(tunnel: Tunnel, session: str, request_id: int = 99) -> None:
    status, _, data = await exchange(
        tunnel,
        call(request_id, "echo", {"text": "still here"}),
        [*legacy_headers(session), *meta(request_id=str(request_id), method="tools/call")],
    )
    assert status == 200
    (answer,) = events(data)
    assert answer["id"] == request_id
    assert answer["result"]["content"][0]["text"] == "still here"


def cancel_notes(provider: Provider, request_id: int) -> list[str]:
    prefix = "notification notifications/cancelled "
    return [
        line
        for line in provider.lines()
        if line.startswith(prefix)
        and json.loads(line[len(prefix) :])["params"]["requestId"] == request_id
    ]


# -- verbatim relaying ----------------------------------------------------------------------------


async def test_bytes_and_allowed_headers_are_relayed_verbatim(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        marker = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        body = call(7, "echo", {"text": "h\u00e9llo \u2603"})
        status, headers, data = await exchange(
            tunnel,
            body,
            [
                *legacy_headers(session),
                ("traceparent", marker),
                ("mcp-param-region", "eu"),
                # Never sent to a provider, whatever reaches the agent:
                ("host", "evil.example"),
                ("origin", "https://evil.example"),
                ("cookie", "c=1"),
                *meta(request_id="7", method="tools/call"),
            ],
        )
    # The same call made directly: the provider's answer bytes are identical.
    async with httpx.AsyncClient() as direct:
        answer = await direct.post(
            provider.url, content=body, headers=dict(legacy_headers(session))
        )
    assert status == 200
    assert data == answer.content
    assert headers["content-type"] == "text/event-stream"
    assert set(headers) <= wire.RESPONSE_HEADERS
    assert "x-accel-buffering" in answer.headers  # the provider sent it; the relay dropped it
    (seen,) = [r for r in provider.requests() if ["traceparent", marker] in r["headers"]]
    names = {name for name, _ in seen["headers"]}
    assert not {name for name in names if name.startswith("x-nfrx-")}
    assert not names & {"origin", "cookie"}
    assert dict(seen["headers"])["host"] == provider.url.split("/")[2]
    assert dict(seen["headers"])["mcp-param-region"] == "eu"
    assert dict(seen["headers"])["accept-encoding"] == "identity"


async def test_a_notification_gets_202_and_its_bytes_arrive_unchanged(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        tag = uuid.uuid4().hex
        body = (
            b'{ "jsonrpc" : "2.0", "method": "notifications/roots/list_changed",'
            b' "params": {"_meta": {"tag": "' + tag.encode() + b'", "x": 1e2}} }'
        )
        status, _, data = await exchange(
            tunnel,
            body,
            [
                *legacy_headers(session),
                *meta(kind=wire.Kind.NOTIFICATION, method="notifications/roots/list_changed"),
            ],
        )
    assert (status, data) == (202, b"")
    assert f"notification notifications/roots/list_changed {body.decode()}" in provider.lines()


async def test_sse_events_are_forwarded_as_they_come(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        body = call(8, "progress", {"steps": 3, "pause": 0.2}, progressToken="p8")
        stream = open_post(
            tunnel, body, [*legacy_headers(session), *meta(request_id="8", method="tools/call")]
        )
        await stream.send_data(body, end=True)
        response = await stream.receive_response()
        assert response.status == 200
        parser = wire.SseParser(1_000_000)
        arrivals: list[list[dict[str, Any]]] = []
        while chunk := await stream.receive_some():
            got = [json.loads(e.data) for e in parser.feed(chunk) if e.is_message]
            if got:
                arrivals.append(got)
    # Each progress event arrived on its own, before the provider had answered.
    assert [m.get("method") for m in arrivals[0]] == ["notifications/progress"]
    flat = [m for batch in arrivals for m in batch]
    assert [m["params"]["progress"] for m in flat[:-1]] == [1, 2, 3]
    assert flat[-1]["id"] == 8
    assert len(arrivals) >= 4


async def test_the_provider_answers_errors_and_redirects_unchanged(provider: Provider) -> None:
    redirect = provider.url.replace("/mcp", "/redirect")
    async with relay(redirect) as (tunnel, _):
        status, headers, data = await exchange(tunnel, b"{}", [ACCEPT, JSON])
    assert (status, data) == (307, b"")  # not followed
    assert "location" not in headers
    async with relay(provider.url) as (tunnel, _):
        status, _, data = await exchange(
            tunnel, call(3, "echo", {"text": "x"}), [*legacy_headers("no-such-session")]
        )
    assert status == 404  # the provider's own answer (the client then re-initializes)
    assert json.loads(data)["error"]["message"]


async def test_protected_resource_metadata_is_the_providers(provider: Provider) -> None:
    async with relay(provider.url, mcp_auth_passthrough=True) as (tunnel, _):
        stream = tunnel.server.open_stream(
            "GET",
            "/.well-known/oauth-protected-resource",
            (("accept", "application/json"),),
            end=True,
        )
        response = await stream.receive_response()
        data = await stream.receive_all(100_000)
    assert response.status == 200
    assert json.loads(data) == {"resource": "https://public.example/api/mcp/id/x"}


async def test_passthrough_relays_the_bearer_and_points_the_challenge_at_the_relay(
    provider: Provider,
) -> None:
    public = "https://gw.example/api/mcp/id/prefs"
    async with relay(provider.url, mcp_auth_passthrough=True) as (tunnel, _):
        status, headers, data = await exchange(
            tunnel,
            b"{}",
            [ACCEPT, JSON, ("authorization", "Bearer bad"), (wire.Meta.PUBLIC_URL, public)],
        )
    assert (status, data) == (401, b"")
    assert headers["www-authenticate"] == (
        'Bearer error="invalid_token", resource_metadata='
        '"https://gw.example/.well-known/oauth-protected-resource/api/mcp/id/prefs"'
    )


def test_prm_urls() -> None:
    assert prm_urls("http://h:1/mcp") == (
        "http://h:1/.well-known/oauth-protected-resource/mcp",
        "http://h:1/.well-known/oauth-protected-resource",
    )
    assert prm_urls("http://h:1/") == ("http://h:1/.well-known/oauth-protected-resource",)
    assert (
        public_prm_url("https://x.example/api/mcp/id/prefs")
        == "https://x.example/.well-known/oauth-protected-resource/api/mcp/id/prefs"
    )


async def test_an_unknown_path_is_404_with_a_jsonrpc_body(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        stream = tunnel.server.open_stream("GET", "/elsewhere", (), end=True)
        response = await stream.receive_response()
        data = await stream.receive_all(100_000)
    assert response.status == 404
    assert json.loads(data)["error"]["data"]["nfrx"]["code"] == wire.RelayCode.RELAY_NOT_FOUND


async def test_an_unreachable_provider_resets_upstream_unreachable() -> None:
    with socketless_port() as port:
        async with relay(f"http://127.0.0.1:{port}/mcp") as (tunnel, _):
            stream = open_post(tunnel, b"{}", [ACCEPT, JSON])
            await stream.send_data(b"{}", end=True)
            with pytest.raises(StreamReset) as caught:
                await stream.receive_response()
    assert caught.value.code == ResetCode.UPSTREAM_UNREACHABLE
    assert f"127.0.0.1:{port}" in caught.value.message


class socketless_port:
    """A loopback port nothing listens on (bound, never listening, for the block's length)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# -- cancellation -------------------------------------------------------------------------------


async def start_slow(
    tunnel: Tunnel,
    provider: Provider,
    tag: str,
    request_id: int,
    headers: list[tuple[str, str]],
    *,
    era: str = wire.LEGACY,
    seconds: float = 30.0,
    idle: float | None = None,
    modern: bool = False,
) -> OutgoingStream:
    """Start the provider's slow tool and wait until it runs."""
    args = {"tag": tag, "seconds": seconds}
    body = modern_call(request_id, "slow", args) if modern else call(request_id, "slow", args)
    stream = open_post(
        tunnel,
        body,
        [*headers, *meta(era=era, request_id=str(request_id), method="tools/call", idle=idle)],
    )
    await stream.send_data(body, end=True)
    await provider.wait_for(f"start {tag}")
    return stream


async def test_legacy_cancel_posts_notifications_cancelled(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        tag = uuid.uuid4().hex
        stream = await start_slow(tunnel, provider, tag, 41, legacy_headers(session))
        stream.reset(ResetCode.CANCELLED, "client went away")
        await provider.wait_for(f"cancelled {tag}")
        (note,) = cancel_notes(provider, 41)
        assert json.loads(note.split(" ", 2)[2])["params"]["reason"]
        await echo_works(tunnel, session)
    assert f"done {tag}" not in provider.lines()


async def test_tunnel_loss_cancels_legacy_work(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        tag = uuid.uuid4().hex
        await start_slow(tunnel, provider, tag, 42, legacy_headers(session))
        tunnel.server.close("test: tunnel dropped")
        await provider.wait_for(f"cancelled {tag}")
    assert len(cancel_notes(provider, 42)) == 1
    async with relay(provider.url) as (tunnel, _):
        await echo_works(tunnel, session)


async def test_client_cancelled_sends_no_second_notification(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        tag = uuid.uuid4().hex
        stream = await start_slow(tunnel, provider, tag, 43, legacy_headers(session), seconds=0.5)
        stream.reset(wire.CLIENT_CANCELLED, "the client sent notifications/cancelled")
        # A legacy provider ignores a closed stream: the tool runs to its end, uncancelled.
        await provider.wait_for(f"done {tag}")
        await echo_works(tunnel, session)
    assert cancel_notes(provider, 43) == []
    assert f"cancelled {tag}" not in provider.lines()


async def test_modern_cancel_only_closes_the_stream(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        tag = uuid.uuid4().hex
        stream = await start_slow(
            tunnel, provider, tag, 44, modern_headers("slow"), era=wire.MODERN, modern=True
        )
        stream.reset(ResetCode.TIMEOUT, "the call timed out")
        await provider.wait_for(f"cancelled {tag}")
        status, _, data = await exchange(
            tunnel,
            modern_call(45, "echo", {"text": "next"}),
            [*modern_headers("echo"), *meta(era=wire.MODERN, request_id="45")],
        )
    assert status == 200
    assert "next" in data.decode()
    assert cancel_notes(provider, 44) == []


async def test_initialize_is_never_cancelled(provider: Provider) -> None:
    """A cancelled initialize closes its stream but sends no notifications/cancelled."""
    before = len([line for line in provider.lines() if "notifications/cancelled" in line])
    async with relay(provider.url) as (tunnel, _):
        body = message(
            5,
            "initialize",
            {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        )
        stream = open_post(tunnel, body, [ACCEPT, JSON, *meta(request_id="5", method="initialize")])
        stream.reset(ResetCode.CANCELLED, "gone")
        session = await initialize(tunnel)
        await echo_works(tunnel, session)
    after = len([line for line in provider.lines() if "notifications/cancelled" in line])
    assert after == before


async def test_the_agent_enforces_the_idle_limit_itself(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, backend):
        backend.idle_margin = 0.2
        session = await initialize(tunnel)
        tag = uuid.uuid4().hex
        stream = await start_slow(tunnel, provider, tag, 46, legacy_headers(session), idle=0.3)
        response = await stream.receive_response()
        assert response.status == 200
        with pytest.raises(StreamReset) as caught:
            await stream.receive_all(1_000_000)
        await provider.wait_for(f"cancelled {tag}")
        await echo_works(tunnel, session)
    assert caught.value.code == ResetCode.TIMEOUT
    assert "0.5 s" in caught.value.message
    assert len(cancel_notes(provider, 46)) == 1


async def test_the_open_timeout_cancels_too(provider: Provider) -> None:
    async with relay(provider.url) as (tunnel, _):
        session = await initialize(tunnel)
        tag = uuid.uuid4().hex
        body = call(47, "slow", {"tag": tag, "seconds": 30})
        stream = open_post(
            tunnel,
            body,
            [*legacy_headers(session), *meta(request_id="47", method="tools/call")],
            timeout=1.0,
        )
        await stream.send_data(body, end=True)
        with pytest.raises((StreamReset, TunnelClosed)) as caught:
            await stream.receive_all(1_000_000)
        await provider.wait_for(f"cancelled {tag}")
    assert isinstance(caught.value, StreamReset)
    assert caught.value.code == ResetCode.TIMEOUT
    assert len(cancel_notes(provider, 47)) == 1


# -- probe --------------------------------------------------------------------------------------


async def test_probe_is_ready_and_leaves_no_session(provider: Provider) -> None:
    cfg = config(provider.url)
    async with http_client(cfg) as client:
        await McpHttpBackend(cfg, client).probe()
    requests = provider.requests()
    probe = [r for r in requests if r["method"] == "POST"][-1]
    assert dict(probe["headers"])["accept"] == "application/json, text/event-stream"
    deleted = [r for r in requests if r["method"] == "DELETE"]
    assert deleted, "the probe's session was not deleted"
    assert dict(deleted[-1]["headers"])["mcp-session-id"]


async def test_probe_of_a_provider_that_is_down() -> None:
    with socketless_port() as port:
        cfg = config(f"http://127.0.0.1:{port}/mcp")
        async with http_client(cfg) as client:
            with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
                await McpHttpBackend(cfg, client).probe()
