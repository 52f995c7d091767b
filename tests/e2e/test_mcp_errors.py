"""The MCP relay's server side end to end: httpx -> nfrx serve -> nfrx mcp -> an MCP provider.

The provider is the ``mcp`` SDK's ``MCPServer`` served in this test's own trio loop (hypercorn on
127.0.0.1), wrapped to record the headers every request reached it with. Covers each refusal a
client can hit (status + JSON-RPC body), sessions (creation, credential binding, DELETE), the
request cap that counts only requests, the call timeout's error shape, a client's own
``notifications/cancelled``, the relay's AUTH_TOKEN, a duplicate CLIENT_ID and ``/api/state``.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from mcp.server.mcpserver import Context, MCPServer

from tests.e2e.harness import Server, nfrx, run_plugin_agent, run_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from tests.e2e.harness import NfrxProcess

pytestmark = pytest.mark.e2e

RELAY = "prefs"
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


@attrs.define(eq=False)
class Provider:
    url: str = ""
    headers: list[dict[str, str]] = attrs.field(factory=list)
    """Headers of every request that reached the provider."""
    methods: list[str] = attrs.field(factory=list)
    """HTTP method of every request that reached the provider."""
    events: list[str] = attrs.field(factory=list)
    """``start <tag>``, ``cancelled <tag>``, ``done <tag>`` of the slow tool."""
    changed: trio.Event = attrs.field(factory=trio.Event)

    def record(self, line: str) -> None:
        self.events.append(line)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, line: str) -> None:
        with trio.fail_after(20):
            while line not in self.events:
                await self.changed.wait()


def _mcp_server(provider: Provider) -> MCPServer:
    server = MCPServer(name="nfrx-server-test", version="1.0")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text."""
        return text

    @server.tool()
    async def slow(tag: str, seconds: float, ctx: Context) -> str:
        """Sleep without progress; records start, cancelled or done."""
        provider.record(f"start {tag}")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            provider.record(f"cancelled {tag}")
            raise
        provider.record(f"done {tag}")
        return f"slept {tag}"

    return server


METADATA = {"resource": "https://public.example/api/mcp/id/prefs", "authorization_servers": []}


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def run_provider(*, json_response: bool = False) -> AsyncIterator[Provider]:
    """The provider; a bearer ``need-auth`` gets a 401 challenge as an OAuth provider's would,
    and ``/.well-known/oauth-protected-resource/mcp`` serves :data:`METADATA`."""
    provider = Provider()
    app = _mcp_server(provider).streamable_http_app(json_response=json_response)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
            provider.headers.append(headers)
            provider.methods.append(scope["method"])
            if scope["method"] == "DELETE":
                provider.record(f"DELETE {headers.get('mcp-session-id')}")
            if scope["path"].startswith("/.well-known/oauth-protected-resource"):
                await _answer(send, 200, json.dumps(METADATA).encode(), [])
                return
            if headers.get("authorization") == "Bearer need-auth":
                challenge = (
                    f'Bearer resource_metadata="{provider.url.removesuffix("/mcp")}'
                    '/.well-known/oauth-protected-resource/mcp", scope="x"'
                )
                await _answer(send, 401, b"{}", [(b"www-authenticate", challenge.encode())])
                return
        await app(scope, receive, send)

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("tests.mcp_provider")
    config.graceful_timeout = 0.5
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(serve, recording, config, shutdown_trigger=stop.wait)
        )
        provider.url = binds[0] + "/mcp"
        try:
            yield provider
        finally:
            stop.set()


@asynccontextmanager
async def relay_setup(
    server_env: Mapping[str, str] | None = None,
    agent_env: Mapping[str, str] | None = None,
    *,
    json_response: bool = False,
) -> AsyncIterator[tuple[Server, Provider, NfrxProcess]]:
    async with (
        run_provider(json_response=json_response) as provider,
        run_server(env={"MCP_CALL_TIMEOUT": "30", **(server_env or {})}) as server,
        run_plugin_agent(
            server,
            "mcp",
            {"MCP_HTTP_URL": provider.url, "CLIENT_ID": RELAY, **(agent_env or {})},
        ) as agent,
    ):
        yield server, provider, agent


def relay_url(server: Server, relay: str = RELAY) -> str:
    return f"{server.url}/api/mcp/id/{relay}"


def request(method: str, request_id: int, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def notification(method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


INITIALIZE = {
    "protocolVersion": LEGACY,
    "capabilities": {},
    "clientInfo": {"name": "nfrx-test", "version": "1"},
}


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a JSON or SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        found = []
        for block in re.split(r"\r\n\r\n|\n\n|\r\r", response.text):
            data = [
                line[5:].lstrip(" ")
                for line in re.split(r"\r\n|\n|\r", block)
                if line.startswith("data:")
            ]
            if data and "".join(data).strip():
                found.append(json.loads("\n".join(data)))
        return found
    loaded: dict[str, Any] = response.json()
    return [loaded]


def final(response: httpx.Response) -> dict[str, Any]:
    return messages(response)[-1]


@attrs.define
class Client:
    """A legacy-era MCP client speaking raw HTTP to the relay."""

    http: httpx.AsyncClient
    url: str
    key: str
    session: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json", **extra}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.session is not None:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = LEGACY
        return headers

    async def post(self, body: bytes, **extra: str) -> httpx.Response:
        return await self.http.post(self.url, content=body, headers=self.headers(**extra))

    async def initialize(self) -> None:
        response = await self.post(request("initialize", 0, INITIALIZE))
        assert response.status_code == 200, response.text
        assert final(response)["result"]["protocolVersion"] == LEGACY
        self.session = response.headers["mcp-session-id"]
        ack = await self.post(notification("notifications/initialized"))
        assert ack.status_code == 202, ack.text

    async def call(self, request_id: int, tool: str, **arguments: Any) -> httpx.Response:
        params = {"name": tool, "arguments": arguments}
        return await self.post(request("tools/call", request_id, params))


def assert_relay_error(
    response: httpx.Response, status: int, code: str, request_id: Any = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == request_id
    assert body["error"]["data"]["nfrx"]["code"] == code, body
    assert body["error"]["message"].startswith("nfrx: ")
    return body


# -- refusals before any relay is involved -------------------------------------------------------


async def test_unknown_relay_and_auth_before_it() -> None:
    async with run_server() as server, httpx.AsyncClient(timeout=30) as http:
        url = relay_url(server, "nobody")
        body = request("tools/list", 1)
        keyed = await http.post(url, content=body, headers={**server.headers(), "Accept": ACCEPT})
        anonymous = await http.post(url, content=body)
        wrong = await http.post(url, content=body, headers={"Authorization": "Bearer nope"})
    assert_relay_error(keyed, 404, "MCP_RELAY_NOT_FOUND")
    # Without the API key, an unknown relay looks like any other: which ids exist is not said.
    for refused in (anonymous, wrong):
        body401 = assert_relay_error(refused, 401, "MCP_UNAUTHORIZED")
        assert refused.headers["www-authenticate"] == 'Bearer realm="nfrx"'
        assert body401["error"]["code"] == -32603


async def test_relay_offline_after_it_left_is_503_with_retry_after() -> None:
    async with run_provider() as provider, run_server() as server:
        env = {"MCP_HTTP_URL": provider.url, "CLIENT_ID": RELAY}
        async with run_plugin_agent(server, "mcp", env):
            pass
        async with httpx.AsyncClient(timeout=30) as http:
            offline = await http.post(
                relay_url(server),
                content=request("tools/list", 1),
                headers={**server.headers(), "Content-Type": "application/json"},
            )
    assert_relay_error(offline, 503, "MCP_PROVIDER_UNAVAILABLE")
    assert "relay offline" in offline.json()["error"]["message"]
    assert offline.headers["retry-after"]


async def test_draining_server_refuses_new_calls_and_waits_for_running_ones() -> None:
    async with (
        relay_setup(server_env={"DRAIN_TIMEOUT": "30"}) as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        async with trio.open_nursery() as nursery:
            results: list[httpx.Response] = []

            async def slow() -> None:
                results.append(await client.call(1, "slow", tag="drain", seconds=2))

            nursery.start_soon(slow)
            await provider.wait_for("start drain")
            server.proc.signal(15)
            await server.proc.wait_for_line(r"waiting for 1 in-flight")
            refused = await client.call(2, "echo", text="late")
        assert_relay_error(refused, 503, "MCP_DRAINING")
        assert refused.headers["retry-after"] == "5"
        # The running call was waited for, not cut.
        assert final(results[0])["result"]["content"][0]["text"] == "slept drain"


# -- refusals of a live relay --------------------------------------------------------------------


async def test_each_refusal_has_a_status_and_a_jsonrpc_body() -> None:
    env = {"MCP_ALLOWED_HOSTS": "127.0.0.1", "BROKER_MAX_REQ_BYTES": "2048"}
    async with (
        relay_setup(server_env=env) as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        ok = await client.post(request("ping", 1))
        assert ok.status_code == 200, ok.text
        assert final(ok) == {"jsonrpc": "2.0", "id": 1, "result": {}}

        evil_host = await client.post(request("ping", 2), Host="evil.example.com")
        assert_relay_error(evil_host, 403, "MCP_FORBIDDEN")
        evil_origin = await client.post(request("ping", 3), Origin="http://evil.example.com")
        assert_relay_error(evil_origin, 403, "MCP_FORBIDDEN")
        host = server.url.removeprefix("http://")
        same_origin = await client.post(request("ping", 4), Origin=f"http://{host}")
        assert same_origin.status_code == 200, same_origin.text

        no_key = await http.post(
            client.url, content=request("ping", 5), headers={"Content-Type": "application/json"}
        )
        assert_relay_error(no_key, 401, "MCP_UNAUTHORIZED")
        assert no_key.headers["www-authenticate"] == 'Bearer realm="nfrx"'

        text = await client.post(request("ping", 6), **{"Content-Type": "text/plain"})
        assert_relay_error(text, 415, "MCP_INVALID_MESSAGE")

        big = await client.post(notification("x/big", {"pad": "x" * 4096}))
        assert_relay_error(big, 413, "MCP_LIMIT_EXCEEDED")

        not_json = await client.post(b"{nope")
        assert assert_relay_error(not_json, 400, "MCP_INVALID_MESSAGE")["error"]["code"] == -32700
        batch = await client.post(b"[" + request("ping", 7) + b"]")
        assert assert_relay_error(batch, 400, "MCP_INVALID_MESSAGE")["error"]["code"] == -32600

        unknown = await Client(http, client.url, client.key, "not-a-session").post(
            request("tools/list", 8)
        )
        assert_relay_error(unknown, 404, "MCP_SESSION_NOT_FOUND", 8)

        slash = await http.post(
            client.url + "/", content=request("ping", 9), headers=client.headers()
        )
        assert slash.status_code == 200, slash.text
        assert final(slash)["id"] == 9
    # What reached the provider carries no client secrets and no nfrx annotations.
    assert provider.headers
    for seen in provider.headers:
        assert not {"authorization", "origin", "cookie"} & set(seen)
        assert not [name for name in seen if name.startswith("x-nfrx-")]


# -- sessions, auth token, state -----------------------------------------------------------------


async def test_sessions_are_bound_to_the_credential_and_end_with_delete() -> None:
    agent_env = {"AUTH_TOKEN": "relay-token"}
    async with (
        relay_setup(agent_env=agent_env) as (server, _, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), "relay-token")
        await client.initialize()
        assert client.session is not None
        echoed = await client.call(1, "echo", text="hi")
        assert echoed.status_code == 200, echoed.text
        assert final(echoed)["result"]["content"][0]["text"] == "hi"

        # The API key works too, but it is another credential: the session is not its own.
        other = Client(http, client.url, server.api_key, session=client.session)
        stolen = await other.call(2, "echo", text="x")
        assert_relay_error(stolen, 404, "MCP_SESSION_NOT_FOUND", 2)
        wrong = await Client(http, client.url, "nope").post(request("ping", 3))
        assert_relay_error(wrong, 401, "MCP_UNAUTHORIZED")

        state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
        relays = state["plugins"]["mcp"]["relays"]
        assert [r["id"] for r in relays] == [RELAY]
        assert relays[0]["transport"] == "http"
        assert relays[0]["auth"] == "token"
        assert relays[0]["sessions_count"] == 1
        assert relays[0]["sessions"][0]["id_prefix"] == client.session[:8]
        assert client.session not in json.dumps(state)

        deleted = await http.delete(client.url, headers=client.headers())
        assert deleted.status_code == 200, deleted.text
        after = await client.call(4, "echo", text="again")
        assert_relay_error(after, 404, "MCP_SESSION_NOT_FOUND", 4)
        state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
        assert state["plugins"]["mcp"]["relays"][0]["sessions_count"] == 0


async def test_duplicate_client_id_is_refused() -> None:
    async with relay_setup() as (server, provider, _):
        env = {
            "SERVER_URL": server.url.replace("http", "ws", 1) + "/api/mcp/connect",
            "CLIENT_KEY": server.client_key,
            "MCP_HTTP_URL": provider.url,
            "CLIENT_ID": RELAY,
        }
        async with nfrx("second agent", ["mcp"], env) as second:
            await second.wait_for_line(r"id_in_use|another mcp agent")
            await second.wait_exit()


# -- limits, timeout, cancellation ---------------------------------------------------------------


async def test_the_cap_counts_requests_only() -> None:
    env = {"BROKER_MAX_CONCURRENCY_PER_CLIENT": "1"}
    async with (
        relay_setup(server_env=env) as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        async with trio.open_nursery() as nursery:
            results: list[httpx.Response] = []

            async def slow() -> None:
                results.append(await client.call(1, "slow", tag="cap", seconds=3))

            nursery.start_soon(slow)
            await provider.wait_for("start cap")
            refused = await client.call(2, "echo", text="over")
            note = await client.post(notification("notifications/roots/list_changed"))
            reply = await client.post(b'{"jsonrpc":"2.0","id":"srv-1","result":{}}')
        assert_relay_error(refused, 429, "MCP_LIMIT_EXCEEDED", 2)
        assert refused.headers["retry-after"] == "1"
        assert note.status_code == 202, note.text
        assert reply.status_code in (202, 400, 404), reply.text  # reached the provider
        assert final(results[0])["result"]["content"][0]["text"] == "slept cap"
        again = await client.call(3, "echo", text="free")
        assert final(again)["result"]["content"][0]["text"] == "free"


async def test_timeout_answers_one_error_and_the_session_still_works() -> None:
    async with (
        relay_setup(server_env={"MCP_CALL_TIMEOUT": "1"}) as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        late = await client.call(7, "slow", tag="late", seconds=8)
        assert late.status_code == 200, late.text
        found = messages(late)
        error = found[-1]
        assert error["id"] == 7
        assert error["error"]["code"] == -32603
        assert error["error"]["data"]["nfrx"]["code"] == "MCP_TIMEOUT"
        assert error["error"]["data"]["nfrx"]["retryable"] is True
        assert "no response within 1 s" in error["error"]["message"]
        assert [m for m in found if m.get("id") == 7] == [error]
        await provider.wait_for("cancelled late")
        assert "done late" not in provider.events
        echoed = await client.call(8, "echo", text="after")
        assert final(echoed)["result"]["content"][0]["text"] == "after"
        metrics = (await http.get(f"{server.url}/metrics")).text
        logs = server.proc.output()
    timeouts = 'nfrx_mcp_exchanges_total{kind="request",outcome="timeout",relay="prefs"} 1.0'
    assert timeouts in metrics
    assert re.search(r"MCP call timed out: relay=prefs method=tools/call id=7", logs)


async def test_client_cancel_ends_the_request_without_an_error() -> None:
    async with (
        relay_setup() as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        async with trio.open_nursery() as nursery:
            results: list[httpx.Response] = []

            async def slow() -> None:
                results.append(await client.call(11, "slow", tag="mine", seconds=8))

            nursery.start_soon(slow)
            await provider.wait_for("start mine")
            cancel = await client.post(
                notification("notifications/cancelled", {"requestId": 11, "reason": "no"})
            )
        assert cancel.status_code == 202, cancel.text
        assert results[0].status_code == 200
        assert [m for m in messages(results[0]) if m.get("id") == 11] == []
        await provider.wait_for("cancelled mine")
        echoed = await client.call(12, "echo", text="next")
        assert final(echoed)["result"]["content"][0]["text"] == "next"


async def test_timeout_before_any_byte_is_a_json_error() -> None:
    async with (
        relay_setup(server_env={"MCP_CALL_TIMEOUT": "1"}, json_response=True) as (server, _, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        late = await client.call(5, "slow", tag="json", seconds=8)
    error = assert_relay_error(late, 200, "MCP_TIMEOUT", 5)
    assert error["error"]["data"]["nfrx"]["req_id"]


async def test_get_streams_are_capped_and_end_with_their_session() -> None:
    async with (
        relay_setup(server_env={"MCP_MAX_STREAMS_PER_CLIENT": "1"}) as (server, _, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        headers = client.headers(Accept="text/event-stream")
        async with http.stream("GET", client.url, headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-accel-buffering"] == "no"
            second = await http.get(client.url, headers=headers)
            assert second.status_code == 429, second.text
            assert second.json()["error"]["data"]["nfrx"]["code"] == "MCP_LIMIT_EXCEEDED"
            assert second.json()["id"] is None
            # Requests are not streams: they still pass.
            echoed = await client.call(1, "echo", text="beside")
            assert final(echoed)["result"]["content"][0]["text"] == "beside"
            deleted = await http.delete(client.url, headers=client.headers())
            assert deleted.status_code == 200, deleted.text
            with trio.fail_after(20):  # the session's end ends its stream
                async for _ in stream.aiter_raw():
                    pass
        state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
        assert state["plugins"]["mcp"]["relays"][0]["streams"] == 0


async def test_idle_sessions_are_reaped_and_deleted_upstream() -> None:
    async with (
        relay_setup(server_env={"MCP_SESSION_IDLE": "1"}) as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        client = Client(http, relay_url(server), server.api_key)
        await client.initialize()
        await provider.wait_for(f"DELETE {client.session}")
        gone = await client.call(1, "echo", text="late")
        assert_relay_error(gone, 404, "MCP_SESSION_NOT_FOUND", 1)
        client.session = None
        await client.initialize()  # the client starts over
        fresh = await client.call(2, "echo", text="new")
        assert final(fresh)["result"]["content"][0]["text"] == "new"


async def test_tunnel_loss_fails_the_call_and_the_relay_goes_offline() -> None:
    async with (
        run_provider() as provider,
        run_server() as server,
        httpx.AsyncClient(timeout=30) as http,
    ):
        env = {"MCP_HTTP_URL": provider.url, "CLIENT_ID": RELAY}
        client = Client(http, relay_url(server), server.api_key)
        results: list[httpx.Response] = []
        async with run_plugin_agent(server, "mcp", env) as agent, trio.open_nursery() as nursery:
            await client.initialize()

            async def slow() -> None:
                results.append(await client.call(3, "slow", tag="drop", seconds=8))

            nursery.start_soon(slow)
            await provider.wait_for("start drop")
            agent.process.kill()
        error = final(results[0])
        assert error["id"] == 3
        assert error["error"]["data"]["nfrx"]["code"] == "MCP_PROVIDER_UNAVAILABLE"
        offline = await client.call(4, "echo", text="x")
        assert_relay_error(offline, 503, "MCP_PROVIDER_UNAVAILABLE")


async def test_passthrough_relay_forwards_auth_and_rewrites_the_challenge() -> None:
    agent_env = {"MCP_AUTH_PASSTHROUGH": "true"}
    server_env = {"PUBLIC_URL": "https://public.example"}
    async with (
        relay_setup(server_env=server_env, agent_env=agent_env) as (server, provider, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        # No API key of its own: the provider decides, and its challenge names the public URL.
        client = Client(http, relay_url(server), "need-auth")
        challenged = await client.post(request("initialize", 0, INITIALIZE))
        assert challenged.status_code == 401, challenged.text
        assert challenged.headers["www-authenticate"] == (
            'Bearer resource_metadata="https://public.example/.well-known/'
            'oauth-protected-resource/api/mcp/id/prefs", scope="x"'
        )
        assert provider.headers[-1]["authorization"] == "Bearer need-auth"
        metadata = await http.get(
            f"{server.url}/.well-known/oauth-protected-resource/api/mcp/id/{RELAY}"
        )
        assert metadata.status_code == 200, metadata.text
        assert metadata.json() == METADATA
        other = await http.get(f"{server.url}/.well-known/oauth-protected-resource/api/mcp/id/x")
        assert_relay_error(other, 404, "MCP_RELAY_NOT_FOUND")
        await Client(http, client.url, "provider-token").initialize()


async def test_session_cap_refuses_a_new_initialize() -> None:
    async with (
        relay_setup(server_env={"MCP_MAX_SESSIONS_PER_CLIENT": "1"}) as (server, _, _),
        httpx.AsyncClient(timeout=30) as http,
    ):
        first = Client(http, relay_url(server), server.api_key)
        await first.initialize()
        second = Client(http, first.url, server.api_key)
        refused = await second.post(request("initialize", 0, INITIALIZE))
        assert_relay_error(refused, 503, "MCP_LIMIT_EXCEEDED", 0)
        assert refused.headers["retry-after"]
        deleted = await http.delete(first.url, headers=first.headers())
        assert deleted.status_code == 200, deleted.text
        await second.initialize()


async def test_a_relay_whose_provider_is_down_answers_503() -> None:
    async with run_provider() as provider:
        url = provider.url
    async with (
        run_server() as server,
        run_plugin_agent(server, "mcp", {"MCP_HTTP_URL": url, "CLIENT_ID": RELAY}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        down = await Client(http, relay_url(server), server.api_key).post(request("ping", 1))
    assert_relay_error(down, 503, "MCP_PROVIDER_UNAVAILABLE")
    assert "cannot reach it" in down.json()["error"]["message"]
