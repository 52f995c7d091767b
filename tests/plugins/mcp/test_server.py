"""The MCP relay's routes in process (:class:`nfrx.plugins.mcp.server.McpRelayRoutes`).

Its checks run as methods inside a request context (no HTTP, no agent behind the tunnel); the
routes as a whole run in the real app on loopback against a scripted agent end of an in-memory
tunnel (``relay_harness``). The e2e suites (``tests/e2e/test_mcp_*.py``) cover the same routes
through real processes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
import trio

from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.plugin import McpPlugin
from nfrx.plugins.mcp.refusals import McpRefusal
from nfrx.plugins.mcp.sessions import Call, EndedBy, McpSession, credential_hash
from nfrx.protocol import Response as ResponseHead
from nfrx.server.registry import AgentStatus
from tests.plugins.mcp.relay_harness import (
    API_KEY,
    LEGACY,
    RELAY,
    answer_json,
    relay_routes,
    request,
    serve_relay,
)

INIT = request(1, "initialize", {"protocolVersion": LEGACY, "capabilities": {}})


def refusal_of(info: pytest.ExceptionInfo[McpRefusal]) -> tuple[int, str, Any]:
    """Status, ``data.nfrx.code`` and the JSON-RPC id of a refusal's body."""
    body = json.loads(info.value.json_bytes("jsonrpc"))
    assert body["error"]["code"] in (wire.INTERNAL_ERROR, wire.INVALID_REQUEST, wire.PARSE_ERROR)
    return info.value.status, body["error"]["data"]["nfrx"]["code"], body["id"]


# -- admission, in the module docstring's order --------------------------------------------------


async def test_a_draining_server_refuses_before_anything_else() -> None:
    async with relay_routes() as r:
        r.routes.gateway.draining = True
        async with r.request(headers={"Authorization": "", "Origin": "http://evil.example"}):
            with pytest.raises(McpRefusal) as info:
                r.routes.admit(RELAY)
    assert refusal_of(info) == (503, "MCP_DRAINING", None)
    assert info.value.headers["Retry-After"] == "5"


async def test_host_and_origin_are_checked_before_the_credential() -> None:
    async with relay_routes(mcp_allowed_hosts=("good.example",)) as r:
        async with r.request(headers={"Host": "evil.example", "Authorization": ""}):
            with pytest.raises(McpRefusal) as info:
                r.routes.admit(RELAY)
        assert refusal_of(info) == (403, "MCP_FORBIDDEN", None)
        assert "the Host 'evil.example' is not allowed" in info.value.message
        async with r.request(headers={"Host": "good.example:8080"}):
            r.routes.admit(RELAY)  # the port does not matter
        async with r.request(headers={"Host": "good.example", "Origin": "http://evil.example"}):
            with pytest.raises(McpRefusal) as info:
                r.routes.admit(RELAY)
        assert refusal_of(info) == (403, "MCP_FORBIDDEN", None)
        async with r.request(headers={"Host": "good.example", "Origin": "https://good.example"}):
            r.routes.admit(RELAY)  # same origin


async def test_an_allowed_origin_passes() -> None:
    async with (
        relay_routes(allowed_origins=("https://app.example",)) as r,
        r.request(headers={"Origin": "https://app.example"}),
    ):
        r.routes.admit(RELAY)


async def test_unknown_and_offline_relays_are_told_apart_only_with_the_api_key() -> None:
    async with relay_routes() as r:
        async with r.request(headers={"Authorization": "Bearer wrong"}):
            with pytest.raises(McpRefusal) as info:
                r.routes.admit("nobody")
        assert refusal_of(info) == (401, "MCP_UNAUTHORIZED", None)
        assert info.value.headers["WWW-Authenticate"] == 'Bearer realm="nfrx"'
        async with r.request():
            with pytest.raises(McpRefusal) as info:
                r.routes.admit("nobody")
        assert refusal_of(info) == (404, "MCP_RELAY_NOT_FOUND", None)
        r.record.session.close("gone")
        async with r.request():
            with pytest.raises(McpRefusal) as info:
                r.routes.admit(RELAY)
        assert refusal_of(info) == (503, "MCP_PROVIDER_UNAVAILABLE", None)
        assert "relay offline" in info.value.message


async def test_a_relay_token_admits_without_the_api_key() -> None:
    digest = hashlib.sha256(b"relay-secret").hexdigest()
    async with relay_routes(api_key="", options={"auth_token_sha256": digest}) as r:
        async with r.request(headers={"Authorization": "Bearer relay-secret"}):
            agent, bearer, passthrough = r.routes.admit(RELAY)
        assert (agent, bearer, passthrough) == (r.record, "relay-secret", False)
        async with r.request(headers={"Authorization": "Bearer other"}):
            with pytest.raises(McpRefusal) as info:
                r.routes.admit(RELAY)
        assert refusal_of(info) == (401, "MCP_UNAUTHORIZED", None)


async def test_a_passthrough_relay_leaves_the_credential_to_its_provider() -> None:
    async with (
        relay_routes(options={"auth_passthrough": "true"}) as r,
        r.request(headers={"Authorization": "Bearer provider-token"}),
    ):
        assert r.routes.admit(RELAY) == (r.record, "provider-token", True)


@pytest.mark.parametrize(
    ("status", "why"),
    [(AgentStatus.NOT_READY, "cannot reach it"), (AgentStatus.DRAINING, "is draining")],
)
async def test_a_relay_that_is_not_ready_is_503(status: str, why: str) -> None:
    async with relay_routes(status=status) as r, r.request():
        with pytest.raises(McpRefusal) as info:
            r.routes.admit(RELAY)
    assert refusal_of(info) == (503, "MCP_PROVIDER_UNAVAILABLE", None)
    assert why in info.value.message


# -- the message -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"x"}', "text/plain", 415, wire.INVALID_REQUEST),
        (b"x" * 101, "application/json", 413, wire.INVALID_REQUEST),
        (b"{not json", "application/json", 400, wire.PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"x"}]', "application/json", 400, -32600),
    ],
)
async def test_a_body_that_is_not_one_small_json_rpc_message_is_refused(
    body: bytes, content_type: str, status: int, code: int
) -> None:
    async with (
        relay_routes(mcp_max_req_bytes=100) as r,
        r.request(body=body, headers={"Content-Type": content_type}),
    ):
        with pytest.raises(McpRefusal) as info:
            await r.routes.read_message(RELAY)
    assert info.value.status == status
    assert json.loads(info.value.json_bytes("jsonrpc"))["error"]["code"] == code


async def test_a_json_rpc_message_is_read_whole_and_parsed() -> None:
    body = b'{"jsonrpc":"2.0","id":"a","method":"tools/list"}'
    async with (
        relay_routes() as r,
        r.request(body=body, headers={"Content-Type": "application/vnd.x+json; charset=utf-8"}),
    ):
        raw, message = await r.routes.read_message(RELAY)
    assert raw == body
    assert (message.kind, message.id, message.method) == (wire.Kind.REQUEST, '"a"', "tools/list")


# -- sessions --------------------------------------------------------------------------------------


async def test_a_session_is_found_only_with_the_credential_that_created_it() -> None:
    async with relay_routes() as r:
        state = r.routes.relays.state(r.record)
        state.sessions["s1"] = McpSession("s1", credential_hash(API_KEY), LEGACY)
        routes = r.routes
        async with r.request(headers={"MCP-Protocol-Version": "2025-06-18"}):
            session = routes.check_session(RELAY, r.record, "s1", credential_hash(API_KEY), "", "7")
        assert session is state.sessions["s1"]
        assert session.protocol_version == "2025-06-18"
        async with r.request():
            with pytest.raises(McpRefusal) as info:
                routes.check_session(RELAY, r.record, "s1", credential_hash("other"), "", "7")
        assert refusal_of(info) == (404, "MCP_SESSION_NOT_FOUND", 7)
        async with r.request():
            with pytest.raises(McpRefusal):
                routes.check_session(RELAY, r.record, "s2", credential_hash(API_KEY), "", "7")
            # A modern request never needs a session; no session id, no session.
            assert routes.check_session(RELAY, r.record, "s2", "", wire.MODERN, "7") is None
            assert routes.check_session(RELAY, r.record, None, "", wire.LEGACY, "7") is None


async def test_the_providers_answer_opens_and_ends_sessions() -> None:
    async with relay_routes(mcp_max_sessions_per_client=1) as r:
        state = r.routes.relays.state(r.record)
        created = ResponseHead(stream_id=1, status=200, headers=(("Mcp-Session-Id", "s1"),))
        async with r.request(headers={"MCP-Protocol-Version": LEGACY}):
            r.routes.note_session(RELAY, r.record, created, None, "cred")
            second = ResponseHead(stream_id=3, status=200, headers=(("mcp-session-id", "s2"),))
            r.routes.note_session(RELAY, r.record, second, None, "cred")  # over the cap
        assert list(state.sessions) == ["s1"]
        assert (state.sessions["s1"].credential, state.sessions["s1"].protocol_version) == (
            "cred",
            LEGACY,
        )
        waiting = Call("tools/call", "5", "s1", 30.0, trio.current_time() + 60)
        state.add(waiting)
        async with r.request():
            r.routes.note_session(RELAY, r.record, ResponseHead(stream_id=5, status=404), "s1", "")
        assert state.sessions == {}
        assert waiting.ended_by == EndedBy.SESSION_ENDED


# -- a request's call ------------------------------------------------------------------------------


async def test_a_requests_call_carries_the_timeouts_and_annotations() -> None:
    async with relay_routes(mcp_call_timeout=30.0, mcp_call_max=600.0) as r, r.request():
        meta: list[tuple[str, str]] = []
        message = wire.parse_message(request(3, "tools/call", {"name": "t"}))
        call, timeout = r.routes.request_call(RELAY, r.record, message, "s1", meta)
        assert (call.request_id, call.session_id, call.idle, call.stream) == ("3", "s1", 30, False)
        assert timeout == 600.0
        assert meta == [
            (wire.Meta.ID, "3"),
            (wire.Meta.METHOD, "tools/call"),
            (wire.Meta.IDLE, "30"),
        ]
        listen = wire.parse_message(request(4, "subscriptions/listen"))
        call, timeout = r.routes.request_call(RELAY, r.record, listen, None, [])
        assert (call.idle, call.stream, timeout, call.hard_deadline) == (None, True, None, 1e999)


async def test_the_relays_caps_refuse_requests_streams_and_sessions() -> None:
    async with relay_routes(
        mcp_max_concurrency_per_client=8,
        mcp_max_streams_per_client=1,
        mcp_max_sessions_per_client=1,
    ) as r:
        state = r.routes.relays.state(r.record)
        for n in range(4):  # the agent's own max_concurrency (4) is the lower cap
            state.add(Call("tools/call", str(n), None, 30.0, trio.current_time() + 60))
        state.add(Call("", None, None, None, 1e999, stream=True))
        state.sessions["s1"] = McpSession("s1", "")
        cases = [
            (request(9, "tools/call"), 429, "4 requests in flight"),
            (request(9, "subscriptions/listen"), 429, "MCP_MAX_STREAMS_PER_CLIENT"),
        ]
        async with r.request():
            for body, status, text in cases:
                with pytest.raises(McpRefusal) as info:
                    r.routes.request_call(RELAY, r.record, wire.parse_message(body), None, [])
                assert refusal_of(info) == (status, "MCP_LIMIT_EXCEEDED", 9)
                assert text in info.value.message
            state.calls.clear()
            with pytest.raises(McpRefusal) as info:
                r.routes.request_call(RELAY, r.record, wire.parse_message(INIT), None, [])
        assert refusal_of(info) == (503, "MCP_LIMIT_EXCEEDED", 1)
        assert info.value.headers["Retry-After"] == "5"


async def test_a_clients_cancel_stops_its_request_but_never_initialize() -> None:
    async with relay_routes() as r, r.request():
        state = r.routes.relays.state(r.record)
        state.sessions["s1"] = McpSession("s1", "")
        work = Call("tools/call", "5", "s1", 30.0, trio.current_time() + 60)
        init = Call("initialize", "1", "s1", None, trio.current_time() + 60)
        state.add(work)
        state.add(init)
        for target in ("5", "1"):
            cancel = json.dumps(
                {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}
            ).replace("5", target)
            message = wire.parse_message(cancel.encode())
            meta: list[tuple[str, str]] = []
            call, _ = r.routes.message_call(r.record, message, "s1", meta)
            assert (call.request_id, meta) == (None, [(wire.Meta.METHOD, message.method)])
        assert work.ended_by == EndedBy.CLIENT_CANCELLED
        assert init.ended_by is None


# -- the routes through the app --------------------------------------------------------------------


async def test_a_post_reaches_the_agent_verbatim_with_the_servers_annotations() -> None:
    reply = {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": LEGACY}}
    script = answer_json(reply, ("mcp-session-id", "sess-1"), ("x-private", "no"))
    async with serve_relay(script) as relay, httpx.AsyncClient() as client:
        body = INIT + b"  "  # trailing bytes pass as sent
        answer = await client.post(
            relay.url + "/",  # the trailing-slash rule: never a redirect
            content=body,
            headers=relay.headers(x_nfrx_mcp_era="modern", cookie="c=1"),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == reply
        assert answer.headers["mcp-session-id"] == "sess-1"
        assert "x-private" not in answer.headers
        method, headers, received = relay.agent.requests[0]
        assert (method, received) == ("POST", body)
        assert headers[wire.Meta.ERA] == wire.LEGACY  # the client's own x-nfrx- is dropped
        assert headers[wire.Meta.KIND] == wire.Kind.REQUEST
        assert headers[wire.Meta.ID] == "1"
        assert headers[wire.Meta.PUBLIC_URL] == relay.url
        assert "authorization" not in headers
        assert "cookie" not in headers
        session = relay.gateway.plugin(McpPlugin).relays.state(relay.record).sessions["sess-1"]
        assert session.credential == credential_hash(API_KEY)


async def test_get_and_delete_carry_the_session_and_delete_ends_it() -> None:
    async def script(stream: Any, agent: Any) -> None:
        if stream.request.method == "GET":
            await stream.send_response(200, (("content-type", "text/event-stream"),))
            await stream.send_data(b": hello\n\n", end=True)
        else:
            await stream.send_response(200, (), end=True)

    async with serve_relay(script) as relay, httpx.AsyncClient() as client:
        state = relay.open_session()
        headers = relay.headers(mcp_session_id="s1")
        stream = await client.get(relay.url, headers=headers)
        assert (stream.status_code, stream.text) == (200, ": hello\n\n")
        assert stream.headers["x-accel-buffering"] == "no"
        deleted = await client.delete(relay.url, headers=headers)
        assert deleted.status_code == 200
        kinds = [(m, h[wire.Meta.KIND], h["mcp-session-id"]) for m, h, _ in relay.agent.requests]
        assert kinds == [("GET", "stream", "s1"), ("DELETE", "delete", "s1")]
        assert state.sessions == {}
        again = await client.delete(relay.url, headers=headers)
        assert again.status_code == 404
        assert again.json()["error"]["data"]["nfrx"]["code"] == "MCP_SESSION_NOT_FOUND"


async def test_metadata_is_only_served_for_a_passthrough_relay() -> None:
    document = {"resource": "x", "authorization_servers": ["https://as.example"]}
    async with serve_relay(answer_json(document)) as relay, httpx.AsyncClient() as client:
        url = f"{relay.base}/.well-known/oauth-protected-resource/api/mcp/id/{RELAY}"
        refused = await client.get(url)
        assert refused.status_code == 404
        assert refused.json()["error"]["data"]["nfrx"]["code"] == "MCP_RELAY_NOT_FOUND"
        relay.record.options["auth_passthrough"] = "true"
        served = await client.get(url)
        assert (served.status_code, served.json()) == (200, document)
        method, headers, _ = relay.agent.requests[0]
        assert (method, headers[wire.Meta.KIND]) == ("GET", "metadata")


async def test_head_is_no_mcp_method_and_never_deletes_the_session() -> None:
    async with relay_routes() as r, r.request(method="HEAD", headers={"Mcp-Session-Id": "s1"}):
        with pytest.raises(McpRefusal) as info:
            await r.routes.mcp(RELAY)
    assert refusal_of(info) == (405, "MCP_INVALID_MESSAGE", None)
    assert info.value.headers["Allow"] == "GET, POST, DELETE"
    body = json.loads(info.value.json_bytes("jsonrpc"))
    assert "HEAD is not an MCP method" in body["error"]["message"]

    async with serve_relay(answer_json({})) as relay, httpx.AsyncClient() as client:
        state = relay.open_session()
        answer = await client.head(relay.url, headers=relay.headers(mcp_session_id="s1"))
        assert answer.status_code == 405
        assert relay.agent.requests == []
        assert list(state.sessions) == ["s1"]
