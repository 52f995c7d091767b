"""A small Streamable HTTP MCP provider (the ``mcp`` SDK's ``MCPServer`` under uvicorn), for the
agent's HTTP backend tests.

Run as ``python -m tests.agent.mcp_http_provider PORT`` (0: any free port); it prints
``listening on PORT`` once it accepts connections. Endpoint: ``/mcp``; also
``/.well-known/oauth-protected-resource/mcp`` (a canned protected-resource document) and
``/redirect`` (a 307 to ``/mcp``, which the relay must not follow). A request with
``Authorization: Bearer bad`` gets a 401 with an OAuth challenge naming ``resource_metadata``.

Evidence for the tests goes to files named by environment variables:

* ``NFRX_TEST_RECORD``: ``start <tag>``, ``cancelled <tag>``, ``done <tag>`` lines from the
  ``slow`` tool, and ``notification <method> <body as received>`` for each notification posted;
* ``NFRX_TEST_HEADERS``: one JSON object per HTTP request: method, path and headers as received.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer(name="nfrx-http-fixture", version="1.0")


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def _record(line: str) -> None:
    path = os.environ.get("NFRX_TEST_RECORD")
    if path:
        _append(path, line)


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def slow(tag: str, seconds: float, ctx: Context) -> str:
    """Work for ``seconds``, reporting progress only at the start; record the outcome."""
    _record(f"start {tag}")
    await ctx.report_progress(0, 1)
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _record(f"cancelled {tag}")
        raise
    _record(f"done {tag}")
    return f"slept {tag}"


@server.tool()
async def progress(steps: int, pause: float, ctx: Context) -> str:
    """Report ``steps`` progress notifications ``pause`` seconds apart, then answer."""
    for step in range(steps):
        await ctx.report_progress(step + 1, steps, f"step {step + 1}")
        await anyio.sleep(pause)
    return "done"


def _recording(app: Any) -> Any:
    """ASGI wrapper: log every request's head; serve the PRM document and the redirect."""

    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        path = os.environ.get("NFRX_TEST_HEADERS")
        if path:
            entry = {"method": scope["method"], "path": scope["path"], "headers": headers}
            _append(path, json.dumps(entry))
        if scope["path"] == "/.well-known/oauth-protected-resource/mcp":
            body = b'{"resource":"https://public.example/api/mcp/id/x"}'
            await _respond(send, 200, [(b"content-type", b"application/json")], body)
            return
        if ("authorization", "Bearer bad") in headers:
            challenge = 'Bearer error="invalid_token", resource_metadata="http://provider/prm"'
            await _respond(send, 401, [(b"www-authenticate", challenge.encode())], b"")
            return
        if scope["path"] == "/redirect":
            await _respond(send, 307, [(b"location", b"/mcp")], b"")
            return
        if scope["method"] == "POST" and scope["path"] == "/mcp":
            receive = await _note_notifications(receive)
        await app(scope, receive, send)

    return wrapper


async def _note_notifications(receive: Any) -> Any:
    """Read the whole body, record it if it is a notification, and replay it to the app."""
    messages = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "method" in parsed and "id" not in parsed:
        _record(f"notification {parsed['method']} {body.decode('utf-8', 'replace')}")

    async def replay() -> Any:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    app = _recording(server.streamable_http_app())
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)

    async def serve() -> None:
        print(f"listening on {sock.getsockname()[1]}", flush=True)
        await uvicorn_server.serve(sockets=[sock])

    anyio.run(serve)


if __name__ == "__main__":
    main()
