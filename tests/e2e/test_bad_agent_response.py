"""An agent's response head is untrusted input (issue 13, finding 1).

A hostile agent -- a raw tunnel client speaking the protocol itself, since the real agent's
httpx would refuse most bad heads before they reach the tunnel -- answers streams with heads no
HTTP client may be sent: 1xx statuses (a 101 used to end the whole server process), header names
and values that would split the head, bad or lying ``content-length`` headers, absurd numbers and
sizes of headers. The client must get a 502 ``bad_agent_response`` (JSON, or a final SSE event, or
a cut connection once a plain answer started), the agent a Reset of that stream, the operator a
WARNING naming the agent and the reason; the server stays up and every other stream and tunnel is
untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import httpx
import pytest
import trio
import trio_websocket

from nfrx.protocol import (
    PROTOCOL_VERSION,
    Hello,
    Open,
    Ping,
    Pong,
    Reset,
    ResetCode,
    Response,
    Welcome,
    codec,
)
from tests.e2e.harness import NfrxProcess, Server, run_server
from tests.fixtures.backend import FixtureBackend

pytestmark = pytest.mark.e2e

# -- a raw tunnel client (the lead may later point this at the shared tests/e2e/hostile.py) -----

Script = Callable[[Open], Sequence[str | bytes]]
"""What the raw agent answers to an Open: WebSocket messages, sent in order."""


@attrs.define(eq=False)
class RawAgent:
    """A tunnel client that answers every stream with its :attr:`script`, unchecked."""

    ws: trio_websocket.WebSocketConnection
    script: Script
    resets: dict[int, Reset] = attrs.field(factory=dict)
    _reset_arrived: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            items = codec.split_batch(message) if codec.is_batch(message) else [message]
            for item in items:
                frame = codec.decode(item)
                if isinstance(frame, Open):
                    for out in self.script(frame):
                        await self.ws.send_message(out)
                elif isinstance(frame, Ping):
                    await self.ws.send_message(codec.encode(Pong(nonce=frame.nonce)))
                elif isinstance(frame, Reset):
                    self.resets[frame.stream_id] = frame
                    self._reset_arrived.set()
                    self._reset_arrived = trio.Event()

    async def wait_reset(self, count: int) -> None:
        """Until ``count`` streams have been reset by the server."""
        with trio.fail_after(10):
            while len(self.resets) < count:
                await self._reset_arrived.wait()


@asynccontextmanager
async def raw_agent(
    server: Server,
    script: Script,
    *,
    kind: str = "llm",
    agent_id: str = "hostile",
    models: tuple[str, ...] = ("hostile-model",),
    options: tuple[tuple[str, str], ...] = (),
) -> AsyncIterator[RawAgent]:
    """A :class:`RawAgent` connected (handshake done, registered) to ``server``."""
    url = re.sub(r"^http", "ws", server.url) + f"/api/{kind}/connect"
    headers = [("Authorization", f"Bearer {server.client_key}")]
    async with trio_websocket.open_websocket_url(
        url, extra_headers=headers, max_message_size=1 << 24
    ) as ws:
        hello = Hello(
            version=PROTOCOL_VERSION,
            kind=kind,
            agent_id=agent_id,
            name=agent_id,
            agent_version="0",
            models=models,
            max_concurrency=64,
            window=1 << 20,
            options=options,
        )
        await ws.send_message(codec.encode(hello))
        assert isinstance(codec.decode(await ws.get_message()), Welcome)
        agent = RawAgent(ws, script)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)
            yield agent
            nursery.cancel_scope.cancel()


def answer(
    status: int,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    end: bool = True,
    batched: bool = True,
) -> Script:
    """A script: this head, then ``body`` (ended unless ``end`` is False), in one WebSocket
    message (``batched``) or one message per frame."""

    def script(frame: Open) -> list[str | bytes]:
        head = Response(
            stream_id=frame.stream_id, status=status, headers=tuple(headers), end=end and not body
        )
        messages = [codec.encode(head)]
        if body or not end:
            messages.append(codec.encode_data(frame.stream_id, body, end=end))
        return [codec.encode_batch(messages)] if batched else messages

    return script


# -- the cases ----------------------------------------------------------------------------------

JSON_TYPE = ("content-type", "application/json")
BODY = b'{"ok": true}'


def working(status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> Script:
    """A head (and the start of a body) from an agent still at work: the server must reset the
    stream so that the agent cancels its backend request."""
    return answer(status, headers, body, end=False)


BAD_HEADS: dict[str, Script] = {
    "status 100": working(100),
    "status 101": working(101),
    "status 101 with upgrade headers": working(101, [("upgrade", "websocket")]),
    "status 103": working(103, [("link", "</x>; rel=preload")], BODY),
    "status 199": working(199, [JSON_TYPE], BODY),
    "CRLF in a value": working(200, [("x-a", "b\r\nset-cookie: evil=1"), JSON_TYPE], BODY),
    "LF in a value": working(200, [("x-a", "b\nx-b: c")], BODY),
    "CR in a value": working(200, [("x-a", "b\rc")], BODY),
    "NUL in a value": working(200, [("x-a", "b\x00c")], BODY),
    "control character in a value": working(200, [("x-a", "b\x1bc")], BODY),
    "empty name": working(200, [("", "v")], BODY),
    "space in a name": working(200, [("x a", "v")], BODY),
    "colon in a name": working(200, [(":status", "200")], BODY),
    "CRLF in a name": working(200, [("x\r\ny", "v")], BODY),
    "non-ASCII name": working(200, [("x-é", "v")], BODY),
    "content-length not a number": working(200, [("content-length", "abc")], BODY),
    "negative content-length": working(200, [("content-length", "-1")], BODY),
    "content-length with a sign": working(200, [("content-length", "+12")], BODY),
    "content-length list": working(200, [("content-length", "12, 12")], BODY),
    "two content-lengths": working(200, [("content-length", "12"), ("content-length", "12")], BODY),
    "huge content-length": working(200, [("content-length", "9" * 40)], BODY),
    "body longer than content-length": working(200, [("content-length", "2")], BODY),
    "transfer-encoding gzip": working(200, [("transfer-encoding", "gzip")], BODY),
    "too many headers": working(200, [(f"x-h{i}", "v") for i in range(1000)], BODY),
    "too large headers": working(200, [("x-big", "v" * 200_000)], BODY),
    # The agent ended its answer: nothing left to cancel, so no Reset to expect.
    "content-length but no body": answer(200, [("content-length", "12")]),
    "body shorter than content-length": answer(200, [("content-length", "100")], BODY),
}
FINISHED = {"content-length but no body", "body shorter than content-length"}


CHAT = {"model": "hostile-model", "messages": [{"role": "user", "content": "hi"}]}


def assert_bad_agent_response(response: httpx.Response, request_id: str) -> None:
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "bad_agent_response"
    assert error["type"] == "api_error"
    assert error["message"] == f"the agent sent an invalid response (request id {request_id})"


async def chat(server: Server, request_id: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{server.api_base}/chat/completions",
            headers={**server.headers(), "X-Request-Id": request_id},
            json=CHAT,
        )


async def good_answer(server: Server) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.api_base}/chat/completions",
            headers=server.headers(),
            json={"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from fixture"


async def test_every_bad_head_is_a_502_and_the_server_lives_on(
    server: Server, agent: NfrxProcess, backend: FixtureBackend
) -> None:
    # A stream of the good agent is under way the whole time: it must not notice anything.
    async with httpx.AsyncClient(timeout=60) as http, trio.open_nursery() as nursery:
        streamed: list[str] = []

        async def long_stream() -> None:
            body = {
                "model": "fixture-model",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "fixture": {"hold": "burst", "events": 3},
            }
            async with http.stream(
                "POST", f"{server.api_base}/chat/completions", headers=server.headers(), json=body
            ) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    streamed.append(line)

        nursery.start_soon(long_stream)
        await backend.wait_for_request()
        async with raw_agent(server, answer(200)) as hostile:
            for number, (case, script) in enumerate(BAD_HEADS.items(), start=1):
                hostile.script = script
                start = len(server.proc.lines)
                response = await chat(server, f"case-{number}")
                assert_bad_agent_response(response, f"case-{number}")
                if case not in FINISHED:
                    # The agent was told (it cancels its backend work) ...
                    await hostile.wait_reset(number - len(FINISHED & set(list(BAD_HEADS)[:number])))
                    assert hostile.resets[number].code == ResetCode.BAD_AGENT_RESPONSE, case
                # ... the operator too, by a WARNING naming the agent.
                await server.proc.wait_for_line(
                    r"WARNING .*llm:hostile: stream \d+: bad response from the agent \(",
                    start=start,
                )
                assert server.proc.process.returncode is None, case
        backend.release("burst")
    assert [line for line in streamed if line][-1] == "data: [DONE]", streamed
    assert server.proc.process.returncode is None
    await good_answer(server)
    assert "Traceback" not in server.proc.output()


async def test_a_head_status_101_no_longer_ends_the_server(server: Server) -> None:
    async with raw_agent(server, answer(101)):
        for number in range(3):
            assert_bad_agent_response(await chat(server, f"r{number}"), f"r{number}")
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{server.url}/healthz")).status_code == 200


async def test_a_bad_head_goes_to_another_agent_first(
    server: Server, agent: NfrxProcess, backend: FixtureBackend
) -> None:
    # Nothing reached the client yet: like an unreachable backend, the request is retried on
    # another agent serving the model.
    async with raw_agent(server, answer(101), models=("fixture-model",)) as hostile:
        for _ in range(4):
            await good_answer(server)
    assert all(r.code == ResetCode.BAD_AGENT_RESPONSE for r in hostile.resets.values())


async def test_a_body_that_breaks_its_content_length_later_cuts_the_connection(
    server: Server,
) -> None:
    # The head went to the client before the body arrived (separate messages): the only honest
    # answer left is an incomplete body -- never a complete-looking wrong one.
    cases = {
        "longer": answer(200, [("content-length", "4"), JSON_TYPE], BODY, end=False, batched=False),
        "shorter": answer(200, [("content-length", "100"), JSON_TYPE], BODY, batched=False),
    }
    async with raw_agent(server, answer(200)) as hostile:
        for number, script in enumerate(cases.values(), start=1):
            hostile.script = script
            async with httpx.AsyncClient(timeout=30) as http:
                with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|without sending"):
                    await http.post(
                        f"{server.api_base}/chat/completions", headers=server.headers(), json=CHAT
                    )
            if number == 1:  # "shorter" ended its stream: nothing to reset
                await hostile.wait_reset(1)
                assert hostile.resets[1].code == ResetCode.BAD_AGENT_RESPONSE
    assert server.proc.process.returncode is None


async def test_an_event_stream_that_breaks_its_content_length_ends_with_an_error_event(
    server: Server,
) -> None:
    head = [("content-type", "text/event-stream"), ("content-length", "30")]
    event = b'data: {"a": 1}\n\n'
    script = answer(200, head, event + event, end=True, batched=False)
    async with (
        raw_agent(server, script),
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST",
            f"{server.api_base}/chat/completions",
            headers=server.headers(),
            json={**CHAT, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        text = (await response.aread()).decode()
    assert text.endswith("\n\n")
    *_, last = text.strip().split("\n\n")
    name, data = last.split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))["error"]
    assert error["code"] == "bad_agent_response"
    request_id = response.headers["x-request-id"]
    assert error["message"] == f"the agent sent an invalid response (request id {request_id})"


async def test_the_mcp_relay_refuses_a_bad_head_too(server: Server) -> None:
    relay = "hostile-mcp"
    message = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
    async with raw_agent(
        server,
        answer(101),
        kind="mcp",
        agent_id=relay,
        models=(),
        options=(("transport", "http"),),
    ) as hostile:
        for number, script in enumerate((working(101), BAD_HEADS["CRLF in a value"]), start=1):
            hostile.script = script
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.post(
                    f"{server.url}/api/mcp/id/{relay}",
                    headers={
                        **server.headers(),
                        "Accept": "application/json, text/event-stream",
                    },
                    json=message,
                )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["id"] == 7
            assert body["error"]["data"]["nfrx"]["code"] == "MCP_UPSTREAM_ERROR"
            assert "bad_agent_response" in body["error"]["message"]
            await hostile.wait_reset(number)
            assert hostile.resets[number].code == ResetCode.BAD_AGENT_RESPONSE
    assert server.proc.process.returncode is None


async def test_docling_and_asr_relays_refuse_a_bad_head_too() -> None:
    async with run_server() as server:
        for kind, model, path, files in (
            ("docling", "docling", "/api/docling/v1/convert/file", {"files": ("a.pdf", b"%PDF")}),
            ("asr", "whisper", "/api/asr/v1/audio/transcriptions", {"file": ("a.wav", b"RIFF")}),
        ):
            async with raw_agent(
                server, working(101), kind=kind, agent_id=f"hostile-{kind}", models=(model,)
            ) as hostile:
                async with httpx.AsyncClient(timeout=30) as http:
                    response = await http.post(
                        server.url + path,
                        headers={**server.headers(), "X-Request-Id": kind},
                        files=files,
                        data={"model": "whisper"},
                    )
                assert_bad_agent_response(response, kind)
                await hostile.wait_reset(1)
        assert server.proc.process.returncode is None


# -- an event stream that breaks off mid-event -------------------------------------------------


async def test_a_stream_that_breaks_mid_event_ends_with_a_clean_error_event(
    server: Server,
) -> None:
    def script(frame: Open) -> list[str | bytes]:
        sid = frame.stream_id
        return [
            codec.encode(
                Response(
                    stream_id=sid, status=200, headers=(("content-type", "text/event-stream"),)
                )
            ),
            codec.encode_data(sid, b'data: {"n": 1}\n\ndata: {"n": 2, "ha'),
            codec.encode(Reset(stream_id=sid, code=ResetCode.UPSTREAM_ERROR, message="gone")),
        ]

    async with (
        raw_agent(server, script),
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST",
            f"{server.api_base}/chat/completions",
            headers={**server.headers(), "X-Request-Id": "mid-event"},
            json={**CHAT, "stream": True},
        ) as response,
    ):
        assert response.status_code == 200
        text = (await response.aread()).decode()
    first, last, empty = text.split("\n\n")
    assert first == 'data: {"n": 1}'
    name, data = last.split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error"
    assert error["message"] == "the agent's backend failed (request id mid-event)"
    assert empty == ""
