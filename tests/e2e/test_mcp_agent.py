"""``nfrx mcp`` as a real process: it connects to a real ``nfrx serve``, is ``not_ready`` while its
provider is down and becomes ready (and relays) once the provider comes up; configuration errors
exit 2 with one line; ``--help`` names the settings."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.harness import Server, clean_env, nfrx, run_plugin_agent, run_server
from tests.fixtures.mcp_stack import agent_env

ROOT = Path(__file__).resolve().parents[2]
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def relay_state(server: Server, client: httpx.AsyncClient) -> dict[str, Any]:
    state = (await client.get(f"{server.url}/api/state", headers=server.headers())).json()
    (agent,) = state["plugins"]["mcp"]["agents"]
    assert isinstance(agent, dict)
    return agent


async def relay_status(server: Server, client: httpx.AsyncClient) -> str:
    status: str = (await relay_state(server, client))["status"]
    return status


async def post(server: Server, client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post(
        f"{server.url}/api/mcp/id/prefs",
        content=json.dumps(body),
        headers={**ACCEPT, **server.headers()},
    )


async def test_not_ready_until_the_provider_answers(tmp_path: Path) -> None:
    placeholder = socket.socket()
    placeholder.bind(("127.0.0.1", 0))  # reserved, not listening: connections are refused
    port = placeholder.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"
    async with (
        run_server() as server,
        run_plugin_agent(server, "mcp", {"CLIENT_ID": "prefs", "MCP_HTTP_URL": url}) as agent,
        httpx.AsyncClient() as client,
    ):
        await agent.wait_for_line(r"backend not ready: POST " + url)
        assert await relay_status(server, client) == "not_ready"
        refused = await post(server, client, INIT)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == -32603
        assert error["data"]["nfrx"]["code"] == "MCP_PROVIDER_UNAVAILABLE"

        placeholder.close()
        provider = await trio.lowlevel.open_process(
            [sys.executable, "-m", "tests.fixtures.mcp_http_provider", str(port)],
            cwd=ROOT,
            env=clean_env({"NFRX_TEST_HEADERS": str(tmp_path / "headers.jsonl")}),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await agent.wait_for_line(r"backend ready")
            with trio.fail_after(10):
                while await relay_status(server, client) != "idle":  # noqa: ASYNC110
                    await trio.sleep(0.05)
            agent_state = await relay_state(server, client)
            # MCP relays have no models; their capacity is MCP_MAX_INFLIGHT (default 16).
            assert (agent_state["models"], agent_state["max_concurrency"]) == ([], 16)
            answer = await post(server, client, INIT)
            assert answer.status_code == 200, answer.text
            assert answer.headers["mcp-session-id"]
            assert '"serverInfo":{"name":"nfrx-http-fixture"' in answer.text
        finally:
            provider.terminate()
            with trio.move_on_after(10):
                await provider.wait()
    seen = [json.loads(line) for line in (tmp_path / "headers.jsonl").read_text().splitlines()]
    # The probe's sessions were deleted; the relayed request carried no nfrx annotations.
    assert any(entry["method"] == "DELETE" for entry in seen)
    for entry in seen:
        assert not [name for name, _ in entry["headers"] if name.startswith("x-nfrx-")]
        assert "authorization" not in dict(entry["headers"])


async def test_a_stdio_relay_starts_without_a_warning_and_names_itself(tmp_path: Path) -> None:
    async with run_server() as server:
        env = agent_env(server, "words", "stdio", None, tmp_path / "events.txt")
        async with run_plugin_agent(server, "mcp", env) as agent:
            ready = await agent.wait_for_line(r"INFO +nfrx\.agent: backend ready: .*")
            started = list(agent.lines)  # before the harness stops it (its shutdown may warn)
    assert ready.string.endswith(": MCP relay at /api/mcp/id/words (stdio provider)"), ready
    connected = next(line for line in started if "connected to " in line)
    assert connected.endswith(": not_ready, MCP relay at /api/mcp/id/words (stdio provider)")
    assert any("INFO    nfrx.agent: backend starting: starting the stdio" in x for x in started)
    assert not [line for line in started if "model(s)" in line or " WARNING " in line], started


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--mcp-stdio-command", "relative-provider"],
            {},
            "MCP_STDIO_COMMAND: 'relative-provider' is not an absolute path",
        ),
        (
            [],
            {"MCP_HTTP_URL": "http://127.0.0.1:9/mcp", "MCP_STDIO_COMMAND": "/bin/true"},
            "set exactly one of MCP_HTTP_URL and MCP_STDIO_COMMAND, not both",
        ),
        ([], {}, "no MCP provider: set MCP_HTTP_URL"),
    ],
)
async def test_configuration_errors_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    async with nfrx("mcp agent", ["mcp", *args], {"CONFIG_FILE": "", **env}) as process:
        status = await process.wait_exit()
        await process.wait_for_line(r"configuration error")
    assert status == 2
    output = process.output()
    assert message in output
    assert output.strip().count("\n") == 0, output


async def test_help_names_the_settings() -> None:
    async with nfrx("mcp help", ["mcp", "--help"], {}) as process:
        assert await process.wait_exit() == 0
        await process.wait_for_line(r"Usage")
    text = " ".join(process.output().split())
    for env in (
        "SERVER_URL",
        "CLIENT_KEY",
        "CLIENT_ID",
        "MCP_HTTP_URL",
        "MCP_HTTP_TIMEOUT",
        "MCP_STDIO_COMMAND",
        "MCP_STDIO_ARGS",
        "MCP_STDIO_WORKDIR",
        "MCP_STDIO_ALLOW_RELATIVE",
        "MCP_MAX_INFLIGHT",
        "AUTH_TOKEN",
        "MCP_AUTH_PASSTHROUGH",
    ):
        assert f"[env: {env}]" in text, env
