"""MCP Inspector (2.12.0, its CLI mode only; without ``--cli`` it would start a web UI) against
the relay, in both eras: a plain URL (the Inspector's own era detection), and a config file with
``protocolEra`` ``legacy`` (initialize, GET stream, ``logging/setLevel``, then the call) and
``modern`` (a ``server/discover`` probe, ``subscriptions/listen``, then the call). For the HTTP and
the stdio fixture provider; a wrong bearer fails with the Inspector's "auth required" exit code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.fixtures.mcp_stack import McpTools, Provider, Relay, mcp_tools, run_relay

pytestmark = pytest.mark.e2e

EXIT_AUTH_REQUIRED = 3


@pytest.fixture(params=["http", "stdio"])
async def relay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relay]:
    mcp_tools()  # skip before starting anything when the Inspector is not installed
    provider: Provider = request.param
    async with run_relay(provider, tmp_path) as r:
        yield r


async def inspector(tools: McpTools, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = tools.env()
    env["HOME"] = str(tmp_path)  # it keeps state under ~; never the real one
    env["MCP_INSPECTOR_SECRET_STORE"] = "memory"  # no OS keychain here
    with trio.fail_after(120):
        result = await trio.run_process(
            tools.command(tools.inspector, "--cli", *args),
            cwd=tmp_path,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def config(tmp_path: Path, relay: Relay, era: str, bearer: str) -> Path:
    server = {
        "type": "streamable-http",
        "url": relay.url,
        "protocolEra": era,
        "headers": {"Authorization": f"Bearer {bearer}"},
    }
    path = tmp_path / f"mcp-{era}.json"
    path.write_text(json.dumps({"mcpServers": {"relay": server}}))
    return path


def parsed(code: int, out: str, err: str) -> Any:
    assert code == 0, f"inspector exit {code}\n{out}\n{err}"
    return json.loads(out)


async def test_tools_list_by_url(relay: Relay, tmp_path: Path) -> None:
    tools = mcp_tools()
    bearer = f"Authorization: Bearer {relay.server.api_key}"
    result = parsed(
        *await inspector(
            tools, tmp_path, relay.url, "--transport", "http", "--method", "tools/list",
            "--header", bearer,
        )
    )  # fmt: skip
    assert {"echo", "slow", "test_simple_text"} <= {t["name"] for t in result["tools"]}


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_tool_call_in_each_era(relay: Relay, tmp_path: Path, era: str) -> None:
    tools = mcp_tools()
    path = config(tmp_path, relay, era, relay.server.api_key)
    result = parsed(
        *await inspector(
            tools, tmp_path, "--config", str(path), "--server", "relay",
            "--method", "tools/call", "--tool-name", "echo", "--tool-arg", f"text=hello {era}",
        )
    )  # fmt: skip
    assert result["isError"] is False
    assert result["content"] == [{"type": "text", "text": f"hello {era}"}]
    listed = parsed(
        *await inspector(
            tools, tmp_path, "--config", str(path), "--server", "relay", "--method", "tools/list"
        )
    )
    assert "echo" in {t["name"] for t in listed["tools"]}


async def test_a_wrong_bearer_is_auth_required(relay: Relay, tmp_path: Path) -> None:
    tools = mcp_tools()
    path = config(tmp_path, relay, "legacy", "not-the-key")
    code, out, err = await inspector(
        tools, tmp_path, "--config", str(path), "--server", "relay", "--method", "tools/list"
    )
    assert code == EXIT_AUTH_REQUIRED, f"{out}\n{err}"
