"""Keys, end to end: the API key guards /api/llm/v1, the client key guards the agents' upgrade."""

from __future__ import annotations

import gc
import json
import warnings
from typing import Any

import httpx
import openai
import pytest
import trio
import trio_websocket

from nfrx.plugins.llm.server import RELAYED_PATHS
from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|httpx2?|httpcore2?)\.:ResourceWarning"
    ),
]

CHAT = {"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]}


def expect_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert isinstance(error["message"], str)
    assert error["message"]


def bad_credentials(server: Server) -> dict[str, dict[str, str]]:
    return {
        "no key": {},
        "wrong key": {"Authorization": "Bearer not-the-key"},
        "client key": {"Authorization": f"Bearer {server.client_key}"},
        "bearer without token": {"Authorization": "Bearer"},
        "basic scheme": {"Authorization": f"Basic {server.api_key}"},
        "token scheme": {"Authorization": f"Token {server.api_key}"},
        "bare key": {"Authorization": server.api_key},
        "wrong x-api-key": {"X-Api-Key": "not-the-key"},
        "client key as x-api-key": {"X-Api-Key": server.client_key},
        "empty x-api-key": {"X-Api-Key": ""},
    }


async def model_ids(server: Server) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.api_base}/models", headers=server.headers())
    assert response.status_code == 200, response.text
    return sorted(m["id"] for m in response.json()["data"])


# -- the API key --------------------------------------------------------------------------------


async def test_api_rejects_bad_credentials(server: Server, agent: NfrxProcess) -> None:
    for label, headers in bad_credentials(server).items():
        # A fresh connection per request: see test_connection_after_an_early_401_*.
        async with httpx.AsyncClient(base_url=server.api_base, timeout=10) as http:
            models = await http.get("/models", headers=headers)
            expect_401(models)
            model = await http.get("/models/fixture-model", headers=headers)
            expect_401(model)
        async with httpx.AsyncClient(base_url=server.api_base, timeout=10) as http:
            chat = await http.post("/chat/completions", headers=headers, json=CHAT)
            expect_401(chat)
        assert models.json() == chat.json() == model.json(), label


async def test_every_api_route_needs_the_key(server: Server, agent: NfrxProcess) -> None:
    routes: list[tuple[str, str]] = [
        ("GET", "/models"),
        ("GET", "/models/fixture-model"),
        ("GET", "/models/no-such-model"),
        *(("POST", path) for path in RELAYED_PATHS),
    ]
    prefixes = [server.api_base, f"{server.url}/api/llm/id/some-agent/v1"]
    for prefix in prefixes:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with httpx.AsyncClient(timeout=10) as http:
                    response = await http.request(
                        method,
                        prefix + path,
                        headers=headers,
                        json=CHAT if method == "POST" else None,
                    )
                expect_401(response)


async def test_api_rejects_before_reading_the_request(
    server: Server, agent: NfrxProcess, backend: FixtureBackend
) -> None:
    async with httpx.AsyncClient(base_url=server.api_base, timeout=10) as http:
        # Not even valid JSON: authentication comes first.
        response = await http.post(
            "/chat/completions", content=b"{not json", headers={"Content-Type": "text/plain"}
        )
        expect_401(response)
    assert not [r for r in backend.requests if r.path.endswith("/chat/completions")]


async def test_api_accepts_the_api_key(
    server: Server, agent: NfrxProcess, backend: FixtureBackend
) -> None:
    async with httpx.AsyncClient(base_url=server.api_base, timeout=30) as http:
        for scheme in ("Bearer", "bearer", "BEARER"):
            headers = {"Authorization": f"{scheme} {server.api_key}"}
            models = await http.get("/models", headers=headers)
            assert models.status_code == 200, models.text
            assert sorted(m["id"] for m in models.json()["data"]) == [
                "fixture-model",
                "org/llama3:8b",
            ]
        chat = await http.post("/chat/completions", headers=server.headers(), json=CHAT)
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "hello from fixture"
    # The client's key stays on the server.
    (rec,) = [r for r in backend.requests if r.path == "/v1/chat/completions"]
    assert "authorization" not in rec.headers


async def test_sdk_authentication_error(server: Server, agent: NfrxProcess) -> None:
    for key in ("not-the-key", server.client_key):
        async with openai.AsyncOpenAI(
            base_url=server.api_base, api_key=key, max_retries=0, timeout=10
        ) as client:
            with pytest.raises(openai.AuthenticationError) as info:
                await client.models.list()
            assert info.value.status_code == 401
            assert info.value.code == "invalid_api_key"
            assert info.value.type == "authentication_error"
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(
                    model="fixture-model", messages=[{"role": "user", "content": "hi"}]
                )
            assert info.value.code == "invalid_api_key"


async def test_sdk_with_the_api_key(server: Server, agent: NfrxProcess) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.api_base, api_key=server.api_key, max_retries=0, timeout=30
    ) as client:
        models = await client.models.list()
        assert sorted(m.id for m in models.data) == ["fixture-model", "org/llama3:8b"]
        completion = await client.chat.completions.create(
            model="fixture-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "hello from fixture"


async def test_sync_sdk_authentication_error(server: Server) -> None:
    def call() -> None:
        with openai.OpenAI(
            base_url=server.api_base, api_key="wrong", max_retries=0, timeout=10
        ) as client:
            client.models.list()

    with pytest.raises(openai.AuthenticationError):
        await trio.to_thread.run_sync(call)


async def read_response(stream: trio.SocketStream) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 response (with a Content-Length) from ``stream`` as (head, body); None if
    the connection closed first."""
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some()
            if not data:
                return None
            buffer += data
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            data = await stream.receive_some()
            if not data:
                return None
            rest += data
    except trio.BrokenResourceError:
        return None
    assert len(rest) == length, "nothing else was asked for"
    return head, rest


async def wait_closed(stream: trio.SocketStream) -> None:
    """Until the peer closes the connection; it must send nothing more."""
    try:
        data = await stream.receive_some()
    except trio.BrokenResourceError:
        return
    assert data == b"", data


async def test_connection_after_an_early_401_is_usable_or_closed(server: Server) -> None:
    """A 401 sent before the body arrived must leave the connection usable, or close it.

    Whether the server gets it wrong depends on task scheduling inside it (nearly always
    today), so a few connections are tried; a correct server passes them all.
    """
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps(CHAT).encode()
    for _ in range(6):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST /api/llm/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            # The server can reject on the headers alone; the body only follows its answer.
            with trio.fail_after(10):
                first = await read_response(stream)
            assert first is not None
            head, _ = first
            assert head.startswith(b"HTTP/1.1 401 "), head
            if b"\r\nconnection: close" in head.lower():
                # The client will not reuse it; the server must close it (RFC 9112, 9.6).
                with trio.fail_after(3):
                    await wait_closed(stream)
                continue
            # Kept alive: the next request on it must be answered, or refused by a close (a
            # client then reconnects) -- never met with silence.
            try:
                await stream.send_all(body)
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            except trio.BrokenResourceError:
                continue
            with trio.fail_after(3):
                second = await read_response(stream)
            if second is not None:
                assert second[0].startswith(b"HTTP/1.1 200 "), second


async def test_early_401_with_the_body_sent_keeps_the_connection(server: Server) -> None:
    # What every ordinary client does: head and body together. The 401 comes back and the same
    # connection then serves the next request.
    async with httpx.AsyncClient(base_url=server.api_base, timeout=10) as http:
        for _ in range(3):
            expect_401(await http.post("/chat/completions", json=CHAT))
            response = await http.get("/models", headers=server.headers())
            assert response.status_code == 200, response.text


# -- the client key -----------------------------------------------------------------------------


BAD_AGENT_KEYS = ["wrong key", "api key", "no key"]


def bad_agent_key(server: Server, which: str) -> str:
    return {"wrong key": "not-the-client-key", "api key": server.api_key, "no key": ""}[which]


@pytest.mark.parametrize("which", BAD_AGENT_KEYS)
async def test_agent_with_bad_client_key_is_refused(
    server: Server, backend: FixtureBackend, which: str
) -> None:
    key = bad_agent_key(server, which)
    start = len(server.proc.lines)
    async with run_agent(
        server, backend.base_url, name="intruder", env={"CLIENT_KEY": key}, wait_connected=False
    ) as agent:
        code = await agent.wait_exit()
        await agent.wait_for_line(r"^nfrx llm: ")
        await wait_eof(agent)
    # A refusal retrying cannot fix: status 2 and one line saying why.
    assert code == 2, agent.output()
    reason = one_line_reason(agent)
    assert reason.startswith("nfrx llm: the server refused this agent: ")
    assert "invalid_client_key" in reason
    assert reason.endswith("(http_401)")
    assert not any("connected to" in line for line in agent.lines), agent.output()
    # The server refused it on the upgrade and never registered it.
    await server.proc.wait_for_line(r"refused a llm agent from .*bad client key", start=start)
    assert not any("intruder" in line for line in server.proc.lines[start:]), server.proc.output()
    assert await model_ids(server) == []
    assert await agent_count(server) == 0
    if key:
        assert key not in server.proc.output()


async def test_agent_with_right_key_still_connects_after_refusals(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(
        server, backend.base_url, name="intruder", env={"CLIENT_KEY": "nope"}, wait_connected=False
    ) as bad:
        assert await bad.wait_exit() != 0
    async with run_agent(server, backend.base_url, name="good"):
        assert await model_ids(server) == ["fixture-model", "org/llama3:8b"]


async def rejected_upgrade(url: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, Any]:
    """Dial ``url`` with trio-websocket; the (status, JSON body) of the rejection.

    trio-websocket does not close its socket when the upgrade is rejected, so the rejected
    connection is dropped and collected here, with its ResourceWarning muted, instead of
    surfacing as an unraisable warning in whatever test happens to run the GC next.
    """

    async def attempt() -> tuple[int, bytes | None]:
        try:
            async with trio_websocket.open_websocket_url(
                url, extra_headers=headers, connect_timeout=10
            ) as ws:
                await ws.get_message()
        except trio_websocket.ConnectionRejected as exc:
            return exc.status_code, exc.body
        raise AssertionError("the upgrade was accepted")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        status, body = await attempt()
        gc.collect()
    assert body is not None
    return status, json.loads(body)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer ak", "Basic ck", "ck", "Bearer"],
    ids=["none", "wrong", "api-key", "basic", "bare", "empty"],
)
async def test_raw_websocket_with_bad_key_gets_401(
    server: Server, authorization: str | None
) -> None:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    status, body = await rejected_upgrade(server.connect_url, headers)
    assert status == 401
    assert body == {
        "error": {
            "message": "missing or invalid client key",
            "type": "authentication_error",
            "code": "invalid_client_key",
        }
    }


async def test_raw_websocket_with_client_key_is_accepted(server: Server) -> None:
    # The upgrade itself succeeds; the protocol handshake is the agent's business.
    headers = [(b"authorization", f"Bearer {server.client_key}".encode())]
    async with trio_websocket.open_websocket_url(
        server.connect_url, extra_headers=headers, connect_timeout=10
    ) as ws:
        assert not ws.closed


# -- no keys configured -------------------------------------------------------------------------


async def test_open_server_warns_and_lets_everything_through(backend: FixtureBackend) -> None:
    async with run_server(api_key="", client_key="") as server:
        output = server.proc.output()
        assert "API_KEY is not set" in output
        assert "CLIENT_KEY is not set" in output
        lines = server.proc.lines
        warned = [i for i, line in enumerate(lines) if " WARNING " in line]
        assert any("API_KEY" in lines[i] and "OPEN" in lines[i] for i in warned), output
        assert any("CLIENT_KEY" in lines[i] and "ANY agent" in lines[i] for i in warned), output
        # The warnings come before the server says it is listening.
        listening = next(i for i, line in enumerate(lines) if "listening on" in line)
        assert all(i < listening for i in warned)

        async with run_agent(server, backend.base_url, env={"CLIENT_KEY": ""}) as agent:
            assert agent.process.returncode is None
            async with httpx.AsyncClient(base_url=server.api_base, timeout=30) as http:
                for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "x"}):
                    models = await http.get("/models", headers=headers)
                    assert models.status_code == 200, models.text
                    assert [m["id"] for m in models.json()["data"]] == [
                        "fixture-model",
                        "org/llama3:8b",
                    ]
                chat = await http.post("/chat/completions", json=CHAT)
                assert chat.status_code == 200, chat.text
        # Any key is fine for an agent too.
        async with run_agent(
            server, backend.base_url, name="keyed", env={"CLIENT_KEY": "whatever"}
        ):
            assert "keyed" in await owners(server)


async def test_keyed_server_does_not_warn(server: Server) -> None:
    output = server.proc.output()
    assert "is not set" not in output
    assert "are equal" not in output


async def test_equal_keys_warn() -> None:
    async with run_server(api_key="same", client_key="same") as server:
        assert "API_KEY and CLIENT_KEY are equal" in server.proc.output()


# -- /healthz -----------------------------------------------------------------------------------


async def test_healthz_needs_no_key(server: Server, backend: FixtureBackend) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, server.headers()):
            response = await http.get(f"{server.url}/healthz", headers=headers)
            assert response.status_code == 200
            assert response.json() == {
                "status": "ok",
                "agents": {"llm": 0, "mcp": 0, "docling": 0, "asr": 0},
            }
        async with run_agent(server, backend.base_url, name="one"):
            response = await http.get(f"{server.url}/healthz")
            assert response.json() == {
                "status": "ok",
                "agents": {"llm": 1, "mcp": 0, "docling": 0, "asr": 0},
            }
            async with run_agent(server, backend.base_url, name="two"):
                response = await http.get(f"{server.url}/healthz")
                assert response.json() == {
                    "status": "ok",
                    "agents": {"llm": 2, "mcp": 0, "docling": 0, "asr": 0},
                }


# -- helpers ------------------------------------------------------------------------------------


async def agent_count(server: Server) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.url}/healthz")
    count: int = response.json()["agents"]["llm"]
    return count


async def owners(server: Server) -> set[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.api_base}/models", headers=server.headers())
    return {name for model in response.json()["data"] for name in model["owned_by"].split(",")}


async def wait_eof(proc: NfrxProcess) -> None:
    """Until the process's output is fully read (it has exited)."""
    with trio.fail_after(10):
        while not proc.eof:
            await proc._changed.wait()


def one_line_reason(proc: NfrxProcess) -> str:
    """The single ``nfrx llm: ...`` line an agent prints when it gives up (and no traceback)."""
    output = proc.output()
    assert "Traceback" not in output, output
    reasons = [line for line in proc.lines if line.startswith("nfrx llm: ")]
    assert len(reasons) == 1, output
    assert proc.lines[-1] == reasons[0], output
    return reasons[0]
