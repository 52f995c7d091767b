"""``nfrx mcp``: its flags, the provider checks (exit 2 with one line) and what it hands the
library. The library entry point is replaced by a recorder (nothing is started)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest
from typer.testing import CliRunner, Result

import nfrx.cli.mcp
from nfrx.cli import app
from nfrx.config import reference
from nfrx.config.model import McpAgentConfig
from nfrx.plugins.mcp.agent import ProviderSpec, hello_options

MCP_ENV = sorted({f.metadata["env"] for f in attrs.fields(McpAgentConfig)})


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[McpAgentConfig, ProviderSpec]]:
    runs: list[tuple[McpAgentConfig, ProviderSpec]] = []
    monkeypatch.setattr(nfrx.cli.mcp, "run", lambda config, spec: runs.append((config, spec)))
    return runs


@pytest.fixture
def program(tmp_path: Path) -> Path:
    """An executable file to use as a stdio provider command."""
    path = tmp_path / "provider"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    environment: dict[str, str | None] = dict.fromkeys(MCP_ENV)
    environment["CONFIG_FILE"] = ""
    environment.update(env or {})
    return CliRunner().invoke(app, ["mcp", *args], env=environment)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_help_names_every_setting_both_providers_and_auth() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    for field in attrs.fields(McpAgentConfig):
        assert f"[env: {field.metadata['env']}]" in text, field.name
        assert reference.flag(field).split(",")[0] in text, field.name
    for phrase in (
        "--mcp-http-url http://127.0.0.1:7777/mcp",
        "--mcp-stdio-command /usr/bin/my-server --",
        "AUTH_TOKEN",
        "MCP_AUTH_PASSTHROUGH",
        "/api/mcp/id/CLIENT_ID",
        "--reconnect",
        "-r",
    ):
        assert phrase in text, phrase


def test_an_http_provider(captured: list[Any]) -> None:
    result = invoke(["--mcp-http-url", "http://127.0.0.1:7777/mcp", "-r", "--client-id", "prefs"])
    assert result.exit_code == 0, result.output
    ((config, spec),) = captured
    assert spec == ProviderSpec("http", url="http://127.0.0.1:7777/mcp")
    assert config.reconnect is True
    assert config.client_id == "prefs"
    assert config.server_url == "ws://127.0.0.1:8080/api/mcp/connect"


def test_a_stdio_provider_with_arguments_after_the_separator(
    captured: list[Any], program: Path, tmp_path: Path
) -> None:
    result = invoke(
        [
            "--mcp-stdio-command",
            str(program),
            "--mcp-stdio-workdir",
            str(tmp_path),
            "--",
            "--flag",
            "a,b",
            "-x",
        ],
        {"MCP_STDIO_ARGS": "ignored,args"},
    )
    assert result.exit_code == 0, result.output
    ((_, spec),) = captured
    assert spec == ProviderSpec(
        "stdio", command=str(program), args=("--flag", "a,b", "-x"), workdir=str(tmp_path)
    )


def test_stdio_arguments_from_the_environment(captured: list[Any], program: Path) -> None:
    result = invoke([], {"MCP_STDIO_COMMAND": str(program), "MCP_STDIO_ARGS": "serve,--quiet"})
    assert result.exit_code == 0, result.output
    ((_, spec),) = captured
    assert spec.args == ("serve", "--quiet")


def test_a_relative_command_is_looked_up_on_path_when_allowed(
    captured: list[Any], program: Path
) -> None:
    env = {"PATH": f"{program.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = invoke(
        ["--mcp-stdio-command", program.name, "--mcp-stdio-allow-relative"],
        env,
    )
    assert result.exit_code == 0, result.output
    ((_, spec),) = captured
    assert spec.command == str(program)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "no MCP provider: set MCP_HTTP_URL (--mcp-http-url) or MCP_STDIO_COMMAND"),
        (
            ["--mcp-http-url", "http://h/mcp", "--mcp-stdio-command", "/bin/true"],
            {},
            "set exactly one of MCP_HTTP_URL and MCP_STDIO_COMMAND, not both",
        ),
        (
            ["--mcp-stdio-command", "my-server"],
            {},
            "MCP_STDIO_COMMAND: 'my-server' is not an absolute path "
            "(set MCP_STDIO_ALLOW_RELATIVE=true to look it up on PATH)",
        ),
        (
            ["--mcp-stdio-command", "no-such-nfrx-provider"],
            {"MCP_STDIO_ALLOW_RELATIVE": "true"},
            "MCP_STDIO_COMMAND: 'no-such-nfrx-provider' was not found on PATH",
        ),
        (
            ["--mcp-stdio-command", "/no/such/provider"],
            {},
            "MCP_STDIO_COMMAND: /no/such/provider is not an executable file",
        ),
        (
            ["--mcp-stdio-command", "/bin/true", "--mcp-stdio-workdir", "/no/such/dir"],
            {},
            "MCP_STDIO_WORKDIR: /no/such/dir is not a directory",
        ),
        (
            ["--mcp-http-url", "ftp://h/mcp"],
            {},
            "MCP_HTTP_URL: 'ftp://h/mcp' is not an http:// or https:// URL",
        ),
        (
            ["--mcp-http-url", "http://h/mcp", "--", "x"],
            {},
            "arguments after -- are for a stdio provider (MCP_STDIO_COMMAND), not for MCP_HTTP_URL",
        ),
        ([], {"MCP_MAX_INFLIGHT": "0"}, "MCP_MAX_INFLIGHT"),
    ],
)
def test_bad_provider_settings_exit_2_with_one_line(
    captured: list[Any], args: list[str], env: dict[str, str], message: str
) -> None:
    result = invoke(args, env)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("nfrx: configuration error: ")
    assert captured == []


def test_print_config_masks_the_auth_token(captured: list[Any]) -> None:
    result = invoke(
        ["--print-config"], {"AUTH_TOKEN": "s3cret-token", "MCP_HTTP_URL": "http://h/mcp"}
    )
    assert result.exit_code == 0, result.output
    assert "s3cret-token" not in result.stdout
    assert "mcp_http_url: http://h/mcp" in result.stdout
    assert captured == []


def test_hello_options_carry_the_token_digest_never_the_token() -> None:
    config = McpAgentConfig(auth_token="tok", mcp_auth_passthrough=True)
    options = hello_options(config, "http")
    assert options == (
        ("transport", "http"),
        ("auth_token_sha256", hashlib.sha256(b"tok").hexdigest()),
        ("auth_passthrough", "true"),
    )
    assert hello_options(McpAgentConfig(), "stdio") == (("transport", "stdio"),)
