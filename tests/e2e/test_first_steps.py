"""What a newcomer meets first on a running server: ``GET /`` leads somewhere useful (the dashboard
for a browser, an index for API clients), and status lines read as HTTP/1.1 status lines."""

from __future__ import annotations

import httpx
import trio

from nfrx._version import __version__
from tests.e2e.harness import Server, run_server

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_a_browser_lands_on_the_dashboard(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        root = await http.get("/", headers={"Accept": BROWSER_ACCEPT})
        assert root.status_code == 302
        assert root.headers["location"] == "/state"
        assert root.headers["vary"] == "Accept"
        page = await http.get("/", headers={"Accept": BROWSER_ACCEPT}, follow_redirects=True)
    assert page.status_code == 200
    assert page.url.path == "/state"
    assert page.headers["content-type"].startswith("text/html")
    assert 'href="/api/client/"' in page.text  # the dashboard links to the API docs


async def test_an_api_client_gets_an_index() -> None:
    async with (
        run_server(env={"PLUGINS": "llm,mcp"}) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        for accept in ("application/json", "*/*", None):
            headers = {"Accept": accept} if accept else {}
            # No key needed: it names routes, it holds no data.
            response = await http.get("/", headers=headers)
            assert response.status_code == 200, accept
            assert response.headers["content-type"].startswith("application/json")
            assert response.json() == {
                "name": "nfrx",
                "version": __version__,
                "dashboard": "/state",
                "docs": "/api/client/",
                "openapi": "/api/client/openapi.json",
                "health": "/healthz",
                "state": "/api/state",
                "apis": {"llm": "/api/llm/v1", "mcp": "/api/mcp/id/{id}"},
            }
            for path in ("/state", "/api/client/", "/api/client/openapi.json", "/healthz"):
                assert (await http.get(path)).status_code == 200, path


async def status_line(server: Server, request: str) -> str:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request.encode())
            data = b""
            while b"\r\n" not in data:
                chunk = await stream.receive_some()
                assert chunk, data
                data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def get(path: str, *headers: str) -> str:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *headers, "", ""])


async def test_status_lines_carry_their_reason_phrase(server: Server) -> None:
    assert await status_line(server, get("/healthz")) == "HTTP/1.1 200 OK"
    assert await status_line(server, get("/api/state")) == "HTTP/1.1 401 Unauthorized"
    assert await status_line(server, get("/nowhere")) == "HTTP/1.1 404 Not Found"
    assert await status_line(server, get("/", "Accept: text/html")) == "HTTP/1.1 302 Found"
