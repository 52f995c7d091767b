"""Client keys end to end: real ``nfrx serve``, ``nfrx llm`` and ``nfrx keys`` processes, the
openai SDK and httpx.

The lifecycle through the CLI and the admin API; every rule refusing before anything reaches an
agent, with the status, body (in the route's style) and ``Retry-After`` a client needs, and the
rate limits recovering once their window ended (``KEY_RATE_WINDOW`` makes it a few seconds: the
tests wait the ``Retry-After`` they were told); usage equal to what the backend reported; and keys,
usage and budgets surviving a restart.
"""

from __future__ import annotations

import json
import re
import signal
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import trio

from tests.e2e.harness import Server, nfrx, run_agent, run_plugin_agent, run_server
from tests.fixtures.backend import run_backend
from tests.fixtures.mcp_stack import run_http_provider

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.harness import NfrxProcess
    from tests.fixtures.backend import FixtureBackend

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|httpx2?|httpcore2?)\.:ResourceWarning"
    ),
]

CHAT = {"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]}
KEYS = "/api/admin/keys"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def admin(
    http: httpx.AsyncClient, server: Server, method: str, path: str = "", body: object = None
) -> httpx.Response:
    return await http.request(
        method, f"{server.url}{KEYS}{path}", headers=server.headers(), json=body
    )


async def create(
    http: httpx.AsyncClient, server: Server, **body: Any
) -> tuple[dict[str, Any], str]:
    response = await admin(http, server, "POST", body=body)
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key, key["secret"]


async def show(http: httpx.AsyncClient, server: Server, ref: str) -> dict[str, Any]:
    response = await admin(http, server, "GET", f"/{ref}")
    assert response.status_code == 200, response.text
    key: dict[str, Any] = response.json()
    return key


async def keys_cli(server: Server, *args: str) -> tuple[int, str]:
    """``nfrx keys ARGS`` against ``server``: its exit status and output."""
    command = ["keys", *args, "--server", server.url, "--api-key", server.api_key]
    async with nfrx("nfrx keys", command, {}) as proc:
        code = await proc.wait_exit()
    return code, proc.output()  # complete: the harness read it to the end


def expect_error(
    response: httpx.Response, status: int, code: str, *, kind: str = ""
) -> dict[str, Any]:
    """An OpenAI-style error: its status, code and (when given) type; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "code"}, error
    assert error["code"] == code, error
    if kind:
        assert error["type"] == kind, error
    return error


def retry_after(response: httpx.Response, at_most: float) -> int:
    seconds = int(response.headers["retry-after"])
    assert 1 <= seconds <= at_most, seconds
    return seconds


def no_secret_anywhere(document: object, secrets: list[str]) -> None:
    text = json.dumps(document)
    for secret in secrets:
        assert secret not in text
    assert "digest" not in text


# -- the lifecycle -------------------------------------------------------------------------------


async def test_key_lifecycle_through_the_cli_and_the_api(
    server: Server, agent: NfrxProcess, backend: FixtureBackend
) -> None:
    code, output = await keys_cli(
        server, "create", "alice", "--model", "fixture*", "--requests-per-minute", "100", "--json"
    )
    assert code == 0, output
    alice = json.loads(output)
    secret = alice["secret"]
    assert re.fullmatch(r"nfrx-[A-Za-z0-9_-]{43}", secret)
    assert alice["prefix"] == secret[:13]
    assert alice["models"] == ["fixture*"]
    assert alice["limits"]["requests_per_minute"] == 100

    code, output = await keys_cli(server, "create", "bob", "--expires", "30d")
    assert code == 0, output
    assert "shown this once" in output
    bob_secret = re.search(r"nfrx-[A-Za-z0-9_-]{43}", output)
    assert bob_secret is not None

    async with openai.AsyncOpenAI(
        base_url=server.api_base, api_key=secret, max_retries=0
    ) as client:
        answer = await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        models = await client.models.list()
    assert answer.choices[0].message.content == "hello from fixture"
    assert [m.id for m in models.data] == ["fixture-model"]  # org/llama3:8b is not allowed

    async with httpx.AsyncClient(timeout=30) as http:
        listed = await admin(http, server, "GET")
        assert listed.status_code == 200
        names = [key["name"] for key in listed.json()["keys"]]
        assert names == ["alice", "bob"]
        no_secret_anywhere(listed.json(), [secret, bob_secret.group(0)])
        state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
        no_secret_anywhere(state["keys"], [secret, bob_secret.group(0)])

        code, output = await keys_cli(server, "list")
        assert code == 0, output
        assert re.search(r"^alice\s+key_\w+\s+nfrx-\S+…\s+active\s+fixture\*", output, re.M)
        code, output = await keys_cli(server, "show", "alice", "--json")
        assert code == 0, output
        assert json.loads(output)["usage"]["requests"] == 2  # the chat and the model list

        code, output = await keys_cli(server, "update", "alice", "--model", "*", "--disable")
        assert code == 0, output
        assert "status:       disabled" in output
        seen = len(backend.requests)
        refused = await http.post(
            f"{server.api_base}/chat/completions", headers=bearer(secret), json=CHAT
        )
        expect_error(refused, 401, "key_disabled")
        enabled = await admin(http, server, "PATCH", "/alice", {"enabled": True})
        assert enabled.json()["status"] == "active"
        assert enabled.json()["models"] == ["*"]
        ok = await http.post(
            f"{server.api_base}/chat/completions", headers=bearer(secret), json=CHAT
        )
        assert ok.status_code == 200

        revoked = await admin(http, server, "DELETE", f"/{alice['id']}")
        assert revoked.status_code == 200
        assert revoked.json()["status"] == "revoked"
        # Refused from the moment the revocation was answered: no delay, no cache.
        refused = await http.post(
            f"{server.api_base}/chat/completions", headers=bearer(secret), json=CHAT
        )
        error = expect_error(refused, 401, "key_revoked", kind="authentication_error")
        assert error["message"] == "the key 'alice' is revoked"
        assert refused.headers["www-authenticate"] == 'Bearer realm="nfrx"'
        assert len(backend.requests) == seen + 1  # only the one allowed request reached it

        code, output = await keys_cli(server, "list")
        assert "alice" not in output
        code, output = await keys_cli(server, "list", "--all")
        assert re.search(r"^alice\s.*\srevoked\s", output, re.M)
        code, output = await keys_cli(server, "revoke", "bob")
        assert code == 0, output
        assert "Revoked client key bob" in output


async def test_admin_api_errors_have_a_status_and_a_body(server: Server) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        _, secret = await create(http, server, name="alice")
        cases = [
            (await admin(http, server, "POST", body={"name": "alice"}), 409, "name_taken"),
            (await admin(http, server, "POST", body={"name": "a b"}), 400, "invalid_request"),
            (await admin(http, server, "POST", body=[1]), 400, "invalid_body"),
            (await admin(http, server, "GET", "/nope"), 404, "key_not_found"),
            (
                await admin(http, server, "PATCH", "/alice", {"limits": {"x": 1}}),
                400,
                "invalid_request",
            ),
        ]
        for response, status, code in cases:
            expect_error(response, status, code)
        bad_json = await http.post(
            f"{server.url}{KEYS}", headers=server.headers(), content=b"{", timeout=30
        )
        expect_error(bad_json, 400, "invalid_json")
        await admin(http, server, "DELETE", "/alice")
        changed = await admin(http, server, "PATCH", "/alice", {"enabled": True})
        expect_error(changed, 409, "key_revoked")
        # A client key is not the admin's key, nor is the agents' key.
        for headers in (bearer(secret), bearer(server.client_key), {}):
            refused = await http.get(f"{server.url}{KEYS}", headers=headers)
            expect_error(refused, 401, "invalid_api_key")
    code, output = await keys_cli(server, "show", "nobody")
    assert code == 1
    assert "answered 404: no client key has the id or name nobody" in output


async def test_without_api_key_the_admin_api_is_off_and_admin_roles_open_it() -> None:
    async with run_server(api_key="") as server, httpx.AsyncClient(timeout=30) as http:
        refused = await http.get(f"{server.url}{KEYS}")
        error = expect_error(refused, 403, "admin_disabled")
        assert "set API_KEY" in error["message"]
    env = {"ADMIN_HTTP_ROLES": "nfrx-admin", "API_HTTP_ROLES": "user"}
    async with run_server(api_key="", env=env) as server, httpx.AsyncClient(timeout=30) as http:
        as_user = await http.get(f"{server.url}{KEYS}", headers={"X-User-Roles": "user"})
        expect_error(as_user, 401, "invalid_api_key")
        as_admin = await http.get(f"{server.url}{KEYS}", headers={"X-User-Roles": "nfrx-admin"})
        assert as_admin.status_code == 200
        assert as_admin.json() == {"keys": []}


# -- rules and limits ----------------------------------------------------------------------------

WINDOW = 4.0
"""KEY_RATE_WINDOW of the limit tests: the per-minute limits count in windows this long."""


async def until_refused(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: object, most: int
) -> tuple[int, httpx.Response]:
    """Send ``body`` until an answer is not 200: how many succeeded, and that answer. A window
    may end between two requests, so up to ``most`` may succeed."""
    for served in range(most + 1):
        response = await http.post(url, headers=headers, json=body)
        if response.status_code != 200:
            return served, response
    raise AssertionError(f"{most + 1} requests were all served")


async def test_per_minute_limits_refuse_with_retry_after_and_recover() -> None:
    env = {"KEY_RATE_WINDOW": f"{WINDOW:g}"}
    async with (
        run_server(env=env) as server,
        run_backend() as backend,
        run_agent(server, backend.base_url),
        httpx.AsyncClient(timeout=30) as http,
    ):
        chat = f"{server.api_base}/chat/completions"
        _, requests = await create(http, server, name="rpm", limits={"requests_per_minute": 2})
        _, tokens = await create(http, server, name="tpm", limits={"tokens_per_minute": 5})
        for secret, most, code in (
            (requests, 4, "rate_limit_exceeded"),
            (tokens, 2, "rate_limit_exceeded"),
        ):
            seen = len(backend.requests)
            served, refused = await until_refused(http, chat, bearer(secret), CHAT, most)
            assert served >= 1
            error = expect_error(refused, 429, code, kind="rate_limit_error")
            wait = retry_after(refused, WINDOW)
            assert error["message"].endswith(f"retry in {wait} s")
            assert len(backend.requests) == seen + served  # the refused one never reached it
            await trio.sleep(wait)  # the window the refusal named has ended
            again = await http.post(chat, headers=bearer(secret), json=CHAT)
            assert again.status_code == 200, again.text
        rpm = await show(http, server, "rpm")
        assert rpm["usage"]["refused"] == 1


async def test_budgets_and_rules_refuse_before_dispatch_in_each_route_style(
    server: Server, agent: NfrxProcess, backend: FixtureBackend
) -> None:
    chat = f"{server.api_base}/chat/completions"
    messages = f"{server.url}/api/llm/v1/messages"
    async with httpx.AsyncClient(timeout=30) as http:
        _, daily = await create(http, server, name="daily", limits={"tokens_per_day": 5})
        _, monthly = await create(http, server, name="monthly", limits={"tokens_per_month": 5})
        for secret, limit in ((daily, 86400), (monthly, 31 * 86400)):
            first = await http.post(chat, headers=bearer(secret), json=CHAT)
            assert first.status_code == 200  # 7 tokens: over the budget, but it was under
            seen = len(backend.requests)
            refused = await http.post(chat, headers=bearer(secret), json=CHAT)
            expect_error(refused, 429, "insufficient_quota", kind="insufficient_quota")
            retry_after(refused, limit)
            # Anthropic's clients get Anthropic's shape on /v1/messages.
            anthropic = await http.post(
                messages,
                headers={"X-Api-Key": secret, "anthropic-version": "2023-06-01"},
                json={**CHAT, "max_tokens": 8},
            )
            assert anthropic.status_code == 429
            assert anthropic.json()["type"] == "error"
            assert anthropic.json()["error"]["type"] == "rate_limit_error"
            assert "retry-after" in anthropic.headers
            assert len(backend.requests) == seen
        # Raising the budget lets the key go on at once (its day does not end in a test).
        raised = await admin(http, server, "PATCH", "/daily", {"limits": {"tokens_per_day": 100}})
        assert raised.json()["windows"]["tokens_today"] == 7
        assert (await http.post(chat, headers=bearer(daily), json=CHAT)).status_code == 200

        _, narrow = await create(http, server, name="narrow", models=["other*"], routes=["llm"])
        seen = len(backend.requests)
        model = await http.post(chat, headers=bearer(narrow), json=CHAT)
        error = expect_error(model, 403, "model_not_allowed", kind="permission_error")
        assert error["message"] == "the key 'narrow' may not use the model 'fixture-model'"
        unknown = await http.post(chat, headers=bearer(narrow), json={**CHAT, "model": "nope"})
        expect_error(unknown, 403, "model_not_allowed")  # which models exist is not said
        assert len(backend.requests) == seen
        docling = await http.post(
            f"{server.url}/api/docling/v1/convert/source", headers=bearer(narrow), json={}
        )
        expect_error(docling, 403, "route_not_allowed", kind="permission_error")
        jobs = await http.post(f"{server.url}/api/jobs", headers=bearer(narrow), json={"type": "x"})
        assert jobs.status_code == 403
        assert jobs.json() == {
            "error": "route_not_allowed",
            "message": "the key 'narrow' may not use jobs",
        }
        expired, old = await create(http, server, name="old", expires_at="2020-01-01T00:00:00Z")
        assert expired["status"] == "expired"
        late = await http.post(chat, headers=bearer(old), json=CHAT)
        expect_error(late, 401, "key_expired")


async def test_mcp_relays_take_client_keys_and_refuse_in_json_rpc() -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "nfrx-test", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    async with (
        run_server() as server,
        run_http_provider() as provider_url,
        run_plugin_agent(server, "mcp", {"MCP_HTTP_URL": provider_url, "CLIENT_ID": "tools"}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        _, tools = await create(
            http, server, name="tools", routes=["mcp:tool*"], limits={"requests_per_minute": 1}
        )
        url = f"{server.url}/api/mcp/id/tools"
        ok = await http.post(url, headers={**headers, **bearer(tools)}, json=initialize)
        assert ok.status_code == 200, ok.text
        limited = await http.post(url, headers={**headers, **bearer(tools)}, json=initialize)
        assert limited.status_code == 429
        assert limited.json()["error"]["data"]["nfrx"] == {
            "code": "MCP_LIMIT_EXCEEDED",
            "retryable": True,
        }
        assert "reached its limit of 1 requests per minute" in limited.json()["error"]["message"]
        assert int(limited.headers["retry-after"]) >= 1
        other = await http.post(
            f"{server.url}/api/mcp/id/other", headers={**headers, **bearer(tools)}, json=initialize
        )
        assert other.status_code == 403
        assert other.json()["error"]["data"]["nfrx"]["code"] == "MCP_FORBIDDEN"
        assert other.json()["jsonrpc"] == "2.0"
        key = await show(http, server, "tools")
        assert [row["model"] for row in key["usage_by_model"]] == ["-", "mcp:tools"]


# -- usage ---------------------------------------------------------------------------------------


async def test_usage_totals_equal_what_the_backend_reported(
    server: Server, agent: NfrxProcess
) -> None:
    async with httpx.AsyncClient(timeout=30) as http, AsyncExitStack() as stack:
        key, secret = await create(http, server, name="metered")
        client = await stack.enter_async_context(
            openai.AsyncOpenAI(base_url=server.api_base, api_key=secret, max_retries=0)
        )
        reported_in = reported_out = 0
        answer = await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        reported_in += answer.usage.prompt_tokens
        reported_out += answer.usage.completion_tokens
        stream = await client.chat.completions.create(  # type: ignore[call-overload]
            **CHAT,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fixture": {"events": 9}},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                reported_in += chunk.usage.prompt_tokens
                reported_out += chunk.usage.completion_tokens
        completion = await client.completions.create(model="fixture-model", prompt="hi")
        assert completion.usage is not None
        reported_in += completion.usage.prompt_tokens
        reported_out += completion.usage.completion_tokens
        embedding = await client.embeddings.create(model="fixture-model", input=["a", "b"])
        reported_in += embedding.usage.prompt_tokens
        assert reported_out == 4 + 9 + 4

        shown = await show(http, server, "metered")
        assert (shown["usage"]["input_tokens"], shown["usage"]["output_tokens"]) == (
            reported_in,
            reported_out,
        )
        assert shown["usage"]["requests"] == 4
        assert shown["usage"]["errors"] == 0
        (row,) = shown["usage_by_model"]
        assert (row["model"], row["requests"], row["output_tokens"]) == (
            "fixture-model",
            4,
            reported_out,
        )
        state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
        (in_state,) = state["keys"]["keys"]
        assert in_state["usage"] == shown["usage"]
        assert state["traffic"]["totals"]["output_tokens"] == reported_out
        metrics = (await http.get(f"{server.url}/metrics")).text
    for kind, value in (("input", reported_in), ("output", reported_out)):
        line = (
            f'nfrx_key_tokens_total{{key="metered",kind="{kind}",model="fixture-model"}} {value}.0'
        )
        assert line in metrics
    assert (
        'nfrx_key_requests_total{key="metered",model="fixture-model",outcome="success"} 4.0'
        in metrics
    )
    code, output = await keys_cli(server, "show", key["id"])
    assert code == 0
    assert f"tokens {reported_in} in / {reported_out} out" in output


async def test_a_stream_that_crosses_the_budget_finishes_and_the_next_request_is_refused(
    server: Server, agent: NfrxProcess
) -> None:
    async with httpx.AsyncClient(timeout=30) as http, AsyncExitStack() as stack:
        _, secret = await create(http, server, name="budget", limits={"tokens_per_day": 10})
        client = await stack.enter_async_context(
            openai.AsyncOpenAI(base_url=server.api_base, api_key=secret, max_retries=0)
        )
        stream = await client.chat.completions.create(  # type: ignore[call-overload]
            **CHAT, stream=True, extra_body={"fixture": {"events": 30}}
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(p or "" for p in pieces) == "".join(f"tok{i}" for i in range(30))
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert refused.value.code == "insufficient_quota"


# -- restarts ------------------------------------------------------------------------------------


async def test_keys_usage_and_budgets_survive_a_clean_restart(tmp_path: Path) -> None:
    env = {"STATE_DIR": str(tmp_path / "state")}
    async with run_backend() as backend, httpx.AsyncClient(timeout=30) as http:
        async with run_server(env=env) as server, run_agent(server, backend.base_url):
            kept, secret = await create(http, server, name="kept", limits={"tokens_per_day": 10})
            _, gone = await create(http, server, name="gone")
            await admin(http, server, "DELETE", "/gone")
            for _ in range(2):
                ok = await http.post(
                    f"{server.api_base}/chat/completions", headers=bearer(secret), json=CHAT
                )
                assert ok.status_code == 200
            before = await show(http, server, "kept")
            server.proc.signal(signal.SIGTERM)  # one: the clean, draining stop
            assert await server.proc.wait_exit() == 0
        assert (tmp_path / "state" / "keys.db").is_file()
        async with run_server(env=env) as server, run_agent(server, backend.base_url):
            after = await show(http, server, "kept")
            assert after["id"] == kept["id"]
            assert after["usage"] == before["usage"]
            assert after["usage"]["output_tokens"] == 8
            assert after["windows"]["tokens_today"] == 14
            chat = f"{server.api_base}/chat/completions"
            over = await http.post(chat, headers=bearer(secret), json=CHAT)
            expect_error(over, 429, "insufficient_quota")  # the day's budget was spent before
            revoked = await http.post(chat, headers=bearer(gone), json=CHAT)
            expect_error(revoked, 401, "key_revoked")


async def test_an_unreadable_key_store_stops_the_server_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "keys.db").write_bytes(b"not a database, whatever it was")
    arguments = ["serve", "--host", "127.0.0.1", "--port", "0"]
    async with nfrx("server", arguments, {"STATE_DIR": str(tmp_path)}) as server:
        assert await server.wait_exit() == 1
    assert server.lines[-1] == (
        f"nfrx serve: cannot read the client keys: key store {tmp_path / 'keys.db'}: "
        "file is not a database"
    )


async def test_the_cli_exits_2_when_the_api_key_is_refused(server: Server) -> None:
    command = ["keys", "list", "--server", server.url, "--api-key", "wrong"]
    async with nfrx("nfrx keys", command, {}) as proc:
        assert await proc.wait_exit() == 2
    assert proc.output() == (
        f"nfrx keys: {server.url}/api/admin/keys answered 401: missing or invalid API key: send "
        "'Authorization: Bearer <API_KEY>' (check --api-key / API_KEY)"
    )
