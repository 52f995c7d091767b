"""A client fuzzer against a real ``nfrx serve`` with a good agent (issue 13: the attacker in the
suite).

Hypothesis writes HTTP/1.1 requests byte by byte -- methods, paths of every route and of none,
headers good and odd (keys, content types, roles, origins, request ids, MCP headers, long and
non-ASCII values, duplicates, malformed lines), bodies (chat requests, arbitrary JSON, bytes,
multipart forms), sent whole, chunked, or with a Content-Length they never meet -- and reads each
answer with h11. The server must answer every one completely with a status below 500 or one of
the documented 502/503/504, log no traceback and no ERROR, and still serve the good agent at the
end.

Deterministic and bounded: ``derandomize`` (the examples are a function of the test's code), no
example database, :data:`EXAMPLES` requests over sockets on loopback. Hypothesis runs in a worker
thread with blocking sockets while the Trio loop keeps the processes' output flowing.
"""

from __future__ import annotations

import json
import socket

import h11
import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend

pytestmark = pytest.mark.e2e

EXAMPLES = 300
SOCKET_TIMEOUT = 20.0
DOCUMENTED_5XX = {502, 503, 504}

# -- requests -----------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/api/llm/v1/chat/completions"),
    ("POST", "/api/llm/v1/completions"),
    ("POST", "/api/llm/v1/embeddings"),
    ("POST", "/api/llm/v1/responses"),
    ("POST", "/api/llm/v1/messages"),
    ("POST", "/api/llm/id/{agent}/v1/chat/completions"),
    ("GET", "/api/llm/v1/models"),
    ("GET", "/api/llm/v1/models/fixture-model"),
    ("GET", "/api/llm/v1/models/org/llama3:8b"),
    ("GET", "/api/llm/id/{agent}/v1/models"),
    ("GET", "/api/llm/connect"),
    ("POST", "/api/mcp/id/{agent}"),
    ("GET", "/api/mcp/id/{agent}/"),
    ("DELETE", "/api/mcp/id/{agent}"),
    ("GET", "/api/mcp/connect"),
    ("GET", "/.well-known/oauth-protected-resource/api/mcp/id/{agent}"),
    ("POST", "/api/docling/v1/convert/file"),
    ("POST", "/api/docling/v1/convert/source"),
    ("POST", "/api/docling/v1/convert/file/async"),
    ("GET", "/api/docling/v1/status/poll/{agent}"),
    ("GET", "/api/docling/v1/result/{agent}"),
    ("POST", "/api/asr/v1/audio/transcriptions"),
    ("POST", "/api/asr/v1/audio/translations"),
    ("GET", "/api/asr/v1/models"),
    ("GET", "/api/state"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("OPTIONS", "/api/llm/v1/chat/completions"),
]

ODD_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "BREW", "get"]

segment = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#"),
    max_size=12,
)
odd_segment = st.sampled_from(
    ["..", ".", "", "%2e%2e", "%00", "%ff", "%zz", "%", "%C3%A9", "~", ";x=1", "a" * 300]
)
raw_segment = st.sampled_from(["é", "\x01", "a b", "\x7f"])
"""Bytes no request line may hold (hypercorn's parser answers 400 before nfrx sees them)."""


def rarely(values: list[bytes], odds: int) -> st.SearchStrategy[bytes]:
    """One of ``values`` about once in ``odds`` draws, else ``b""`` (also the simplest choice:
    hypothesis starts with, and shrinks towards, ordinary requests)."""
    return st.sampled_from([b""] * odds + values)


@st.composite
def targets(draw: st.DrawFn) -> tuple[str, str]:
    """(method, request target): a route with its method, now and then another."""
    method, route = draw(st.sampled_from(ROUTES))
    if draw(rarely([b"odd"], 5)):
        method = draw(st.sampled_from(ODD_METHODS))
    agent = draw(st.one_of(st.just("alpha"), segment, odd_segment))
    if draw(rarely([b"raw"], 40)):
        agent += draw(raw_segment)
    path = route.replace("{agent}", agent)
    if draw(rarely([b"extra"], 6)):
        extra = draw(st.lists(st.one_of(segment, odd_segment), min_size=1, max_size=3))
        path = "/".join([path.rstrip("/"), *extra])
    if draw(rarely([b"query"], 3)):
        query = draw(st.lists(st.tuples(segment, st.one_of(segment, odd_segment)), max_size=3))
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    return method, path.encode("utf-8").decode("latin-1")  # the request line's raw bytes


token_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
odd_value = st.one_of(
    token_value,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.sampled_from(["", " ", "x" * 9000, "\x80\xff obs-text", "é", "null", "[]", "{}", "-1"]),
)

HEADER_VALUES: dict[str, st.SearchStrategy[str]] = {
    "Authorization": st.sampled_from(
        ["Bearer ak", "Bearer ak", "Bearer ck", "Bearer wrong", "Bearer", "Basic YWs6", "ak", ""]
    ),
    "X-Api-Key": st.sampled_from(["ak", "wrong", ""]),
    "Content-Type": st.one_of(
        st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "multipart/form-data; boundary=XyZ",
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "text/plain",
                "application/x-www-form-urlencoded",
                "text/event-stream",
            ]
        ),
        odd_value,
    ),
    "Accept": st.sampled_from(
        ["application/json", "text/event-stream", "application/json, text/event-stream", "*/*"]
    ),
    "X-Request-Id": st.one_of(token_value, odd_value),
    "Origin": st.sampled_from(["http://evil.example", "null", "http://127.0.0.1", ""]),
    "X-User-Roles": st.sampled_from(["admin", "agent", "", "admin,agent"]),
    "Mcp-Session-Id": odd_value,
    "MCP-Protocol-Version": st.sampled_from(["2025-03-26", "2026-07-28", "9999-99-99", "x"]),
    "Last-Event-ID": odd_value,
    "anthropic-version": st.sampled_from(["2023-06-01", ""]),
    "Access-Control-Request-Method": st.sampled_from(["POST", "GET", "PUT"]),
    "Upgrade": st.sampled_from(["websocket", "h2c", "foo"]),
    "Connection": st.sampled_from(["keep-alive", "close", "upgrade", "Upgrade, HTTP2-Settings"]),
    "Sec-WebSocket-Key": st.just("dGhlIHNhbXBsZSBub25jZQ=="),
    "Sec-WebSocket-Version": st.just("13"),
    "Expect": st.just("100-continue"),
    "Range": st.just("bytes=0-1"),
    "X-Odd-Header": odd_value,
}

headers = st.lists(
    st.sampled_from(sorted(HEADER_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), HEADER_VALUES[name])
    ),
    max_size=8,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
chat_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["fixture-model", "org/llama3:8b", "llama3:8b-q4_0", "none", ""]),
        "messages": st.one_of(
            st.just([{"role": "user", "content": "hi"}]), st.lists(json_values, max_size=2)
        ),
    },
    optional={
        "stream": st.one_of(st.booleans(), json_values),
        "max_tokens": st.one_of(st.integers(-5, 5), json_values),
        "input": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=5), max_size=3)),
        "stream_options": st.just({"include_usage": True}),
        "jsonrpc": st.just("2.0"),
        "method": st.sampled_from(["initialize", "tools/list", "tools/call", "ping"]),
        "id": st.one_of(st.integers(), st.text(max_size=5)),
    },
)
multipart = st.builds(
    lambda model, data: (
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        + model.encode()
        + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + data
        + b"\r\n--XyZ--\r\n"
    ),
    st.sampled_from(["whisper", "", "x" * 300]),
    st.binary(max_size=64),
)
bodies = st.one_of(
    chat_bodies.map(lambda value: json.dumps(value).encode()),
    st.just(b""),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    multipart,
    st.sampled_from([b"{", b"null", b'{"model": 1}', b'{"model": "fixture-model"}', b"\xff\xfe"]),
)

MALFORMED_LINES = [b"X-Bad : v", b"NoColon", b" folded: v", b"X-Nul: a\x00b", b": empty"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """(method, the request's bytes)."""
    method, path = draw(targets())
    body = draw(bodies)
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1"), b"Host: 127.0.0.1"]
    lines.append(draw(st.sampled_from([b"Authorization: Bearer ak", b""])))
    for name, value in draw(headers):
        lines.append(f"{name}: {value}".encode("latin-1", "replace"))
    lines.append(draw(rarely(MALFORMED_LINES, 60)))
    lines = [line for line in lines if line]
    framing = draw(st.sampled_from(["length", "chunked", "length", "none"]))
    if draw(rarely([b"short"], 40)):
        framing = "short"
    if framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    elif framing == "short":
        # A Content-Length the client never meets: BODY_TIMEOUT (1 s here) ends it.
        lines.append(b"Content-Length: %d" % (len(body) + 10))
        payload = body
    elif framing == "none":
        payload = b""
    else:
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    return method, b"\r\n".join(lines) + b"\r\n\r\n" + payload


# -- answers ------------------------------------------------------------------------------------


def exchange(port: int, method: str, data: bytes) -> tuple[int, bytes]:
    """Send ``data``; the status and body of the answer (h11 checks its framing)."""
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method=method.upper() if method.upper() == "HEAD" else "GET",
            target="/",
            headers=[("Host", "x")],
        )
    )
    client.send(h11.EndOfMessage())
    status = 0
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(data)
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                chunk = sock.recv(65536)
                if chunk.startswith(b"HTTP/1.1 101 "):
                    return 101, b""  # a WebSocket upgrade was accepted (a tunnel with the key)
                client.receive_data(chunk)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"the server closed the connection (status {status})")


def check(port: int, method: str, data: bytes) -> None:
    status, body = exchange(port, method, data)
    assert status < 500 or status in DOCUMENTED_5XX, (status, body[:500])
    if status >= 400 and body and method.upper() != "HEAD":
        # Every refusal of ours is JSON (hypercorn's own 400 for unparseable HTTP is empty).
        json.loads(body)


async def test_no_request_makes_the_server_fail(backend: FixtureBackend) -> None:
    async with (
        run_server(env={"BODY_TIMEOUT": "1", "ALLOWED_ORIGINS": "http://127.0.0.1"}) as server,
        run_agent(server, backend.base_url) as agent,
    ):
        port = int(server.url.rsplit(":", 1)[1])

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(requests())
        def fuzz(request: tuple[str, bytes]) -> None:
            check(port, *request)

        await trio.to_thread.run_sync(fuzz)
        await assert_healthy(server, agent)


async def assert_healthy(server: Server, agent: NfrxProcess) -> None:
    assert server.proc.process.returncode is None
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.api_base}/chat/completions",
            headers=server.headers(),
            json={"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 200, response.text
    output = server.proc.output()
    assert "Traceback" not in output, output[-5000:]
    assert " ERROR " not in output, output[-5000:]
    assert agent.process.returncode is None
