"""CORS (ALLOWED_ORIGINS) and trusted-proxy roles (API_HTTP_ROLES / CLIENT_HTTP_ROLES), end to end
against a real ``nfrx serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio_websocket

from tests.e2e.harness import Server, run_server
from tests.e2e.test_auth import rejected_upgrade

pytestmark = pytest.mark.e2e

APP = "https://app.example"
ALLOW_METHODS = {"GET", "POST", "OPTIONS", "DELETE"}
ALLOW_HEADERS = {
    "authorization",
    "content-type",
    "x-api-key",
    "x-request-id",
    "anthropic-version",
    "anthropic-beta",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
}


def items(value: str) -> set[str]:
    return {item.strip() for item in value.split(",") if item.strip()}


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


@pytest.fixture
async def cors_server() -> AsyncIterator[Server]:
    env = {
        "ALLOWED_ORIGINS": f"{APP}, http://localhost:3000",
        "API_HTTP_ROLES": "nfrx-api, admin",
        "CLIENT_HTTP_ROLES": "nfrx-agent",
    }
    async with run_server(env=env) as server:
        yield server


# -- CORS ---------------------------------------------------------------------------------------


async def test_preflight_from_an_allowed_origin_needs_no_key(cors_server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/api/llm/v1/chat/completions", "/api/llm/v1/models", "/healthz"):
            response = await http.options(f"{cors_server.url}{path}", headers=preflight(APP))
            assert response.status_code == 204, (path, response.text)
            assert response.content == b""
            assert response.headers["access-control-allow-origin"] == APP
            assert items(response.headers["access-control-allow-methods"]) == ALLOW_METHODS
            assert {
                h.lower() for h in items(response.headers["access-control-allow-headers"])
            } == ALLOW_HEADERS


async def test_preflight_from_another_origin_is_403_json(cors_server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.options(
            f"{cors_server.api_base}/chat/completions", headers=preflight("https://evil.example")
        )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert not any(name.startswith("access-control-") for name in response.headers)


async def test_allowed_origin_gets_cors_headers_on_answers_and_errors(cors_server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        ok = await http.get(
            f"{cors_server.api_base}/models", headers={"Origin": APP, **cors_server.headers()}
        )
        refused = await http.get(f"{cors_server.api_base}/models", headers={"Origin": APP})
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 401  # a browser app can read why
    for response in (ok, refused):
        assert response.headers["access-control-allow-origin"] == APP
        assert items(response.headers["access-control-expose-headers"]) == {
            "X-Request-Id",
            "Mcp-Session-Id",
            "Mcp-Protocol-Version",
            "WWW-Authenticate",
        }
        assert "Origin" in response.headers["vary"]


async def test_other_origins_get_no_cors_headers(cors_server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in ({"Origin": "https://evil.example"}, {"Origin": f"{APP}.evil"}, {}):
            response = await http.get(
                f"{cors_server.api_base}/models", headers={**headers, **cors_server.headers()}
            )
            assert response.status_code == 200
            assert not any(name.startswith("access-control-") for name in response.headers)


async def test_without_allowed_origins_there_is_no_cors(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(
            f"{server.api_base}/models", headers={"Origin": APP, **server.headers()}
        )
        assert response.status_code == 200
        assert not any(name.startswith("access-control-") for name in response.headers)
        pre = await http.options(f"{server.api_base}/models", headers=preflight(APP, "GET"))
        assert pre.status_code == 403


async def test_star_allows_any_origin() -> None:
    async with (
        run_server(env={"ALLOWED_ORIGINS": "*"}) as server,
        httpx.AsyncClient(timeout=10) as http,
    ):
        for origin in ("https://a.example", "http://127.0.0.1:5173"):
            pre = await http.options(f"{server.api_base}/models", headers=preflight(origin))
            assert pre.status_code == 204
            assert pre.headers["access-control-allow-origin"] == origin
            get = await http.get(
                f"{server.api_base}/models", headers={"Origin": origin, **server.headers()}
            )
            assert get.headers["access-control-allow-origin"] == origin


# -- roles --------------------------------------------------------------------------------------


async def test_api_role_grants_the_api_like_the_key(cors_server: Server) -> None:
    async with httpx.AsyncClient(base_url=cors_server.api_base, timeout=10) as http:
        for roles in ("nfrx-api", "viewer, admin", "viewer ,nfrx-api"):
            response = await http.get("/models", headers={"X-User-Roles": roles})
            assert response.status_code == 200, (roles, response.text)
        for roles in ("", "viewer", "nfrx-agent", "nfrx-api-x", "NFRX-API"):
            response = await http.get("/models", headers={"X-User-Roles": roles})
            assert response.status_code == 401, roles
        # The key still works on its own.
        assert (await http.get("/models", headers=cors_server.headers())).status_code == 200


async def test_client_role_opens_a_tunnel_like_the_client_key(cors_server: Server) -> None:
    headers = [(b"x-user-roles", b"viewer, nfrx-agent")]
    async with trio_websocket.open_websocket_url(
        cors_server.connect_url, extra_headers=headers, connect_timeout=10
    ) as ws:
        assert not ws.closed
    for roles in (b"viewer", b"nfrx-api"):
        status, _ = await rejected_upgrade(cors_server.connect_url, [(b"x-user-roles", roles)])
        assert status == 401, roles


async def test_roles_without_keys_still_guard() -> None:
    # No keys, but roles configured: the API and the tunnel are not open.
    env = {"API_HTTP_ROLES": "nfrx-api", "CLIENT_HTTP_ROLES": "nfrx-agent"}
    async with run_server(api_key="", client_key="", env=env) as server:
        async with httpx.AsyncClient(base_url=server.api_base, timeout=10) as http:
            assert (await http.get("/models")).status_code == 401
            ok = await http.get("/models", headers={"X-User-Roles": "nfrx-api"})
            assert ok.status_code == 200
        status, _ = await rejected_upgrade(server.connect_url, [])
        assert status == 401
        assert "is OPEN" not in server.proc.output()
