"""The stdio bridge through an in-memory tunnel against a real stdio MCP provider process
(``tests/fixtures/mcp_stdio_provider.py``, the ``mcp`` SDK's server)."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from nfrx.agent.runtime import BackendStarting, BackendUnavailable
from nfrx.config.model import McpAgentConfig
from nfrx.plugins.mcp import modern_validation, stdio_exchange, wire
from nfrx.plugins.mcp.stdio import StdioBridge
from nfrx.plugins.mcp.stdio_pool import provider_argv
from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset
from nfrx.transport.session import TunnelSession
from nfrx.transport.streams import IncomingStream, OutgoingStream
from tests.transport.helpers import open_tunnel

ROOT = Path(__file__).resolve().parents[3]
CAP = 60.0
"""Hard cap on each test (real processes)."""
MODERN = "2026-07-28"


def make_config(record: Path, *, legacy_only: bool = False, **changes: Any) -> McpAgentConfig:
    args = ("-m", "tests.fixtures.mcp_stdio_provider", *(["--legacy-only"] if legacy_only else []))
    config = McpAgentConfig(
        mcp_stdio_command=sys.executable,
        mcp_stdio_args=args,
        mcp_stdio_env=(f"NFRX_TEST_RECORD={record}", f"PYTHONPATH={ROOT}"),
        mcp_stdio_workdir=str(ROOT),
    )
    return attrs.evolve(config, **changes)


@attrs.define
class Relay:
    bridge: StdioBridge
    server: TunnelSession
    record: Path


@asynccontextmanager
async def relay(tmp_path: Path, **options: Any) -> AsyncIterator[Relay]:
    record = tmp_path / "record.txt"
    record.touch()
    bridge = StdioBridge(make_config(record, **options))
    async with serving(bridge) as server:
        yield Relay(bridge, server, record)


@asynccontextmanager
async def serving(bridge: StdioBridge) -> AsyncIterator[TunnelSession]:
    """``bridge`` running and ready behind an in-memory tunnel; yields the tunnel's server end."""

    async def handler(stream: IncomingStream) -> None:
        await bridge.handle(stream)

    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.run)
            while True:
                try:
                    await bridge.probe()
                    break
                except BackendUnavailable:
                    await trio.sleep(0.05)
            async with open_tunnel(handler) as tunnel:
                yield tunnel.server
            nursery.cancel_scope.cancel()


def meta_headers(body: dict[str, Any], era: str, idle: float | None) -> list[tuple[str, str]]:
    message = wire.parse_message(json.dumps(body).encode())
    headers = [(wire.Meta.ERA, era), (wire.Meta.KIND, message.kind)]
    if message.id is not None and message.kind == wire.Kind.REQUEST:
        headers.append((wire.Meta.ID, message.id))
    if message.method:
        headers.append((wire.Meta.METHOD, message.method))
    if idle is not None and message.kind == wire.Kind.REQUEST:
        headers.append((wire.Meta.IDLE, str(idle)))
    return headers


def routing_headers(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``Mcp-Method`` and ``Mcp-Name`` headers a modern client sends for ``body``."""
    method = body.get("method")
    if not isinstance(method, str):
        return []
    headers = [("mcp-method", method)]
    key = modern_validation.NAME_BEARING_METHODS.get(method)
    value = body.get("params", {}).get(key) if key else None
    if isinstance(value, str):
        headers.append(("mcp-name", value))
    return headers


async def open_post(
    server: TunnelSession,
    body: dict[str, Any] | bytes,
    *,
    session: str = "",
    era: str = wire.LEGACY,
    idle: float | None = 30.0,
) -> OutgoingStream:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ]
    if isinstance(body, dict):
        headers += meta_headers(body, era, idle)
    else:
        headers.append((wire.Meta.ERA, era))
    if session:
        headers.append(("mcp-session-id", session))
    if era == wire.MODERN:
        headers.append(("mcp-protocol-version", MODERN))
        if isinstance(body, dict):
            headers += routing_headers(body)
    stream = server.open_stream("POST", "/", tuple(headers), timeout=600)
    await stream.send_data(raw, end=True)
    return stream


@attrs.define
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The final message, whether it came as JSON or as the last SSE event (the bridge
        picks SSE when the provider takes longer than its deferral window)."""
        if self.headers.get("content-type") == "text/event-stream":
            return json.loads(self.events[-1])
        return json.loads(self.body)

    @property
    def events(self) -> list[bytes]:
        parser = wire.SseParser(1 << 24)
        return [e.data for e in parser.feed(self.body) if e.is_message]


async def read_all(stream: OutgoingStream) -> Answer:
    head = await stream.receive_response()
    body = b""
    while chunk := await stream.receive_some():
        body += chunk
    return Answer(head.status, dict(head.headers), body)


async def post(server: TunnelSession, body: dict[str, Any] | bytes, **kwargs: Any) -> Answer:
    return await read_all(await open_post(server, body, **kwargs))


def call(
    request_id: Any, tool: str, arguments: dict[str, Any], token: Any = None
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if token is not None:
        params["_meta"] = {"progressToken": token}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def modern(body: dict[str, Any]) -> dict[str, Any]:
    params = body.setdefault("params", {})
    params.setdefault("_meta", {}).update(
        {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    )
    return body


INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


async def open_session(server: TunnelSession) -> str:
    answer = await post(server, INIT)
    assert answer.status == 200
    session = answer.headers["mcp-session-id"]
    assert (await post(server, INITIALIZED, session=session)).status == 202
    return session


async def wait_for_line(path: Path, line: str) -> None:
    """Until the provider process recorded ``line`` (another process's file: polled)."""
    while line not in (await trio.Path(path).read_text()).splitlines():  # noqa: ASYNC110
        await trio.sleep(0.02)


async def drain(stream: OutgoingStream) -> None:
    while await stream.receive_some():
        pass


def tool_text(message: dict[str, Any]) -> str:
    text = message["result"]["content"][0]["text"]
    assert isinstance(text, str)
    return text


# -- sessions and messages -----------------------------------------------------------------------


async def test_initialize_mints_a_session_and_requests_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A response that comes first is plain JSON.
    monkeypatch.setattr(stdio_exchange, "JSON_DEFER", CAP)
    async with relay(tmp_path, legacy_only=True) as r:
        answer = await post(r.server, INIT)
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json"
        session = answer.headers["mcp-session-id"]
        assert len(session) >= 16
        assert all(0x21 <= ord(c) <= 0x7E for c in session)
        assert answer.json["id"] == 0
        assert answer.json["result"]["serverInfo"]["name"] == "nfrx-stdio-fixture"

        note = await post(r.server, INITIALIZED, session=session)
        assert (note.status, note.body) == (202, b"")

        listed = await post(
            r.server, {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, session=session
        )
        assert listed.status == 200
        assert listed.json["id"] == 7
        assert {"echo", "slow", "sample"} <= {t["name"] for t in listed.json["result"]["tools"]}


async def test_ids_are_restored_byte_for_byte_in_each_session(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        first, second = await open_session(r.server), await open_session(r.server)
        assert first != second
        for session in (first, second):
            raw = (
                b'{"jsonrpc":"2.0","id":  "\\u00e9-1" ,"method":"tools/call",'
                b'"params":{"name":"echo","arguments":{"text":"x"}}}'
            )
            answer = await post(r.server, raw, session=session)
            assert answer.status == 200
            assert b'"id":"\\u00e9-1"' in answer.body  # the client's own spelling
            by_int = await post(r.server, call(1, "echo", {"text": "int"}), session=session)
            by_str = await post(r.server, call("1", "echo", {"text": "str"}), session=session)
            assert (by_int.json["id"], tool_text(by_int.json)) == (1, "int")
            assert (by_str.json["id"], tool_text(by_str.json)) == ("1", "str")


async def test_progress_streams_as_sse_then_the_response(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        answer = await post(
            r.server, call(5, "progress", {"steps": 3}, token="tok"), session=session
        )
        assert answer.status == 200
        assert answer.headers["content-type"] == "text/event-stream"
        assert answer.headers["x-accel-buffering"] == "no"
        messages = [json.loads(e) for e in answer.events]
        progress = [m for m in messages if m.get("method") == "notifications/progress"]
        assert [p["params"]["progress"] for p in progress] == [1, 2, 3]
        assert {p["params"]["progressToken"] for p in progress} == {"tok"}
        assert messages[-1]["id"] == 5
        assert tool_text(messages[-1]) == "done"


async def test_session_errors(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        unknown = await post(r.server, call(1, "echo", {"text": "x"}), session="nope")
        assert unknown.status == 404
        assert unknown.json["id"] == 1
        assert unknown.json["error"]["data"]["nfrx"]["code"] == wire.RelayCode.SESSION_NOT_FOUND

        missing = await post(r.server, call(2, "echo", {"text": "x"}))
        assert missing.status == 400
        assert missing.json["error"]["code"] == wire.INVALID_REQUEST
        assert "missing session" in missing.json["error"]["message"]

        garbage = await post(r.server, b"{not json")
        assert garbage.status == 400
        assert garbage.json["error"]["code"] == wire.PARSE_ERROR

        get = await read_all(
            r.server.open_stream("GET", "/", ((wire.Meta.ERA, wire.LEGACY),), end=True)
        )
        assert get.status == 405
        assert get.headers["allow"] == "POST, DELETE"


async def test_delete_stops_the_process_and_the_session(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        pid = int(tool_text((await post(r.server, call(1, "whoami", {}), session=session)).json))
        os.kill(pid, 0)  # alive

        headers = (
            (wire.Meta.ERA, wire.LEGACY),
            (wire.Meta.KIND, "delete"),
            ("mcp-session-id", session),
        )
        deleted = await read_all(r.server.open_stream("DELETE", "/", headers, end=True))
        assert deleted.status == 200
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        after = await post(r.server, call(2, "echo", {"text": "x"}), session=session)
        assert after.status == 404


async def test_process_cap_answers_503(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True, mcp_stdio_max_processes=2) as r:
        await open_session(r.server)
        await open_session(r.server)
        refused = await post(r.server, INIT)
        assert refused.status == 503
        assert refused.json["id"] == 0
        assert refused.json["error"]["data"]["nfrx"]["code"] == wire.RelayCode.LIMIT_EXCEEDED
        assert refused.headers["retry-after"] == "5"


# -- cancellation ------------------------------------------------------------------------------


async def first_event(stream: OutgoingStream) -> dict[str, Any]:
    head = await stream.receive_response()
    assert head.status == 200
    parser = wire.SseParser(1 << 20)
    while True:
        events = [e for e in parser.feed(await stream.receive_some()) if e.is_message]
        if events:
            message: dict[str, Any] = json.loads(events[0].data)
            return message


async def test_reset_cancels_the_provider_work_and_the_session_goes_on(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        get_headers = (
            (wire.Meta.ERA, wire.LEGACY),
            (wire.Meta.KIND, "stream"),
            ("mcp-session-id", session),
        )
        get = r.server.open_stream("GET", "/", get_headers, end=True)
        assert (await get.receive_response()).status == 200

        stream = await open_post(
            r.server, call(3, "slow", {"tag": "a", "seconds": 20}, token=3), session=session
        )
        progress = await first_event(stream)
        assert progress["params"]["progressToken"] == 3
        stream.reset(ResetCode.TIMEOUT, "the call timed out")
        await wait_for_line(r.record, "cancelled a")

        after = await post(r.server, call(3, "echo", {"text": "again"}), session=session)
        assert (after.json["id"], tool_text(after.json)) == (3, "again")
        # Nothing about the cancelled request reached the session's other stream.
        get.reset()
        assert "done a" not in r.record.read_text()


async def test_client_cancel_is_mapped_to_the_process_id(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        stream = await open_post(
            r.server, call("c", "slow", {"tag": "b", "seconds": 20}, token="p"), session=session
        )
        await first_event(stream)
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": "c"},
        }
        assert (await post(r.server, cancel, session=session)).status == 202
        await wait_for_line(r.record, "cancelled b")
        with pytest.raises(StreamReset):
            await drain(stream)
        stale = await post(r.server, cancel, session=session)  # no longer in flight: not written
        assert stale.status == 202
        after = await post(r.server, call("c", "echo", {"text": "ok"}), session=session)
        assert tool_text(after.json) == "ok"


async def test_inactivity_limit_answers_a_timeout_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stdio_exchange, "IDLE_MARGIN", 0.0)
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        answer = await post(
            r.server, call(9, "slow", {"tag": "c", "seconds": 20}), session=session, idle=0.3
        )
        assert answer.status == 200
        assert answer.json["id"] == 9
        assert answer.json["error"]["code"] == wire.INTERNAL_ERROR
        assert answer.json["error"]["data"]["nfrx"]["code"] == wire.RelayCode.TIMEOUT
        await wait_for_line(r.record, "cancelled c")


async def test_process_exit_fails_the_call_and_ends_the_session(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        pid = int(tool_text((await post(r.server, call(1, "whoami", {}), session=session)).json))
        stream = await open_post(
            r.server, call(2, "slow", {"tag": "d", "seconds": 20}, token=2), session=session
        )
        await first_event(stream)
        os.kill(pid, signal.SIGKILL)
        rest = b""
        while chunk := await stream.receive_some():
            rest += chunk
        final = json.loads(wire.SseParser(1 << 20).feed(rest)[-1].data)
        assert final["id"] == 2
        assert final["error"]["data"]["nfrx"]["code"] == wire.RelayCode.PROVIDER_UNAVAILABLE
        gone = await post(r.server, call(3, "echo", {"text": "x"}), session=session)
        assert gone.status == 404


# -- server-to-client requests -------------------------------------------------------------------


async def test_sampling_round_trip(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        session = await open_session(r.server)
        stream = await open_post(r.server, call(4, "sample", {"prompt": "hi"}), session=session)
        request = await first_event(stream)
        assert request["method"] == "sampling/createMessage"
        reply = {
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {
                "role": "assistant",
                "content": {"type": "text", "text": "hello"},
                "model": "m",
            },
        }
        accepted = await post(r.server, reply, session=session)
        assert (accepted.status, accepted.body) == (202, b"")
        rest = b""
        while chunk := await stream.receive_some():
            rest += chunk
        final = json.loads(wire.SseParser(1 << 20).feed(rest)[-1].data)
        assert (final["id"], tool_text(final)) == (4, "hello")


# -- eras ----------------------------------------------------------------------------------------


async def test_modern_request_to_a_legacy_provider_is_a_plain_400(tmp_path: Path) -> None:
    async with relay(tmp_path, legacy_only=True) as r:
        answer = await post(r.server, modern(call(1, "echo", {"text": "x"})), era=wire.MODERN)
        assert answer.status == 400
        error = answer.json["error"]
        assert error["code"] == wire.INVALID_REQUEST  # not a modern code: clients fall back
        assert "initialize" in error["message"]


async def test_modern_requests_share_one_process_with_ids_rewritten(tmp_path: Path) -> None:
    async with relay(tmp_path) as r:
        assert r.bridge.pool.modern is True
        answers: dict[str, Answer] = {}

        async def one(text: str) -> None:
            answers[text] = await post(
                r.server, modern(call(1, "echo", {"text": text})), era=wire.MODERN
            )

        async with trio.open_nursery() as nursery:
            for text in ("a", "b", "c"):
                nursery.start_soon(one, text)
        for text, answer in answers.items():
            assert answer.status == 200
            assert "mcp-session-id" not in answer.headers
            assert (answer.json["id"], tool_text(answer.json)) == (1, text)
        unknown = await post(
            r.server, modern({"jsonrpc": "2.0", "id": 2, "method": "no/such"}), era=wire.MODERN
        )
        assert unknown.status == 404
        assert unknown.json["error"]["code"] == -32601


async def test_modern_reset_cancels_the_shared_process_work(tmp_path: Path) -> None:
    async with relay(tmp_path) as r:
        body = modern(call(1, "slow", {"tag": "m", "seconds": 20}, token=1))
        stream = await open_post(r.server, body, era=wire.MODERN)
        await first_event(stream)
        stream.reset(ResetCode.CANCELLED, "client left")
        await wait_for_line(r.record, "cancelled m")
        again = await post(r.server, modern(call(1, "echo", {"text": "next"})), era=wire.MODERN)
        assert tool_text(again.json) == "next"


# -- configuration and start-up ------------------------------------------------------------------


def test_relative_command_needs_permission(tmp_path: Path) -> None:
    config = attrs.evolve(make_config(tmp_path / "r"), mcp_stdio_command="python3")
    with pytest.raises(ValueError, match="absolute path"):
        provider_argv(config)
    allowed = attrs.evolve(config, mcp_stdio_allow_relative=True)
    assert os.path.isabs(provider_argv(allowed)[0])


async def test_a_provider_that_is_starting_is_not_a_failure(tmp_path: Path) -> None:
    bridge = StdioBridge(make_config(tmp_path / "r"))
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.run)
            # The era probe and the spare take a process start at least: not ready, not broken.
            with pytest.raises(BackendStarting, match="starting the stdio provider"):
                await bridge.probe()
            nursery.cancel_scope.cancel()


async def test_a_provider_that_cannot_start_is_not_ready(tmp_path: Path) -> None:
    config = attrs.evolve(make_config(tmp_path / "r"), mcp_stdio_command=str(tmp_path / "missing"))
    bridge = StdioBridge(config)
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.run)
            while not bridge.pool.last_error:  # noqa: ASYNC110 (the supervisor sets no event for it)
                await trio.sleep(0.02)
            with pytest.raises(BackendUnavailable, match="cannot start") as failure:
                await bridge.probe()
            assert not isinstance(failure.value, BackendStarting)
            nursery.cancel_scope.cancel()
