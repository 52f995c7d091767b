"""``nfrx mcp``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from nfrx.cli.options import PRINT_CONFIG_HELP, configure, doc, fail, setup_logging
from nfrx.config.load import ConfigError
from nfrx.config.model import McpAgentConfig

if TYPE_CHECKING:
    from nfrx.plugins.mcp.agent import ProviderSpec

HELP = (
    "Run an MCP relay agent next to an MCP provider, so that MCP clients can use it at the "
    "server's /api/mcp/id/CLIENT_ID. It dials the server's /api/mcp/connect (SERVER_URL, "
    "CLIENT_KEY) and relays every MCP exchange, in both protocol eras, to exactly one provider:"
    "\n\n"
    "a Streamable HTTP provider: nfrx mcp --mcp-http-url http://127.0.0.1:7777/mcp "
    "(MCP_HTTP_URL; MCP_HTTP_TIMEOUT, MCP_HTTP_INSECURE_SKIP_VERIFY);"
    "\n\n"
    "or a stdio provider: nfrx mcp --mcp-stdio-command /usr/bin/my-server -- --its-flag value "
    "(MCP_STDIO_COMMAND; arguments after -- replace MCP_STDIO_ARGS; MCP_STDIO_ENV, "
    "MCP_STDIO_WORKDIR; the command must be an absolute path unless MCP_STDIO_ALLOW_RELATIVE)."
    "\n\n"
    "Clients authenticate with the server's API_KEY or, when set, this relay's own AUTH_TOKEN "
    "(only its SHA-256 reaches the server), so the relay URL can be shared without the API key. "
    "The bearer is stripped before the provider unless MCP_AUTH_PASSTHROUGH is on, for providers "
    "that do their own OAuth. SIGTERM/SIGINT drains gracefully; a second one stops at once."
)

C = McpAgentConfig


def command(
    server_url: Annotated[str | None, typer.Option(help=doc(C, "server_url"))] = None,
    client_key: Annotated[str | None, typer.Option(help=doc(C, "client_key"))] = None,
    client_id: Annotated[str | None, typer.Option(help=doc(C, "client_id"))] = None,
    client_name: Annotated[str | None, typer.Option(help=doc(C, "client_name"))] = None,
    mcp_http_url: Annotated[str | None, typer.Option(help=doc(C, "mcp_http_url"))] = None,
    mcp_http_timeout: Annotated[float | None, typer.Option(help=doc(C, "mcp_http_timeout"))] = None,
    mcp_http_insecure_skip_verify: Annotated[
        bool | None,
        typer.Option(
            "--mcp-http-insecure-skip-verify", help=doc(C, "mcp_http_insecure_skip_verify")
        ),
    ] = None,
    mcp_stdio_command: Annotated[str | None, typer.Option(help=doc(C, "mcp_stdio_command"))] = None,
    mcp_stdio_args: Annotated[str | None, typer.Option(help=doc(C, "mcp_stdio_args"))] = None,
    mcp_stdio_env: Annotated[str | None, typer.Option(help=doc(C, "mcp_stdio_env"))] = None,
    mcp_stdio_workdir: Annotated[str | None, typer.Option(help=doc(C, "mcp_stdio_workdir"))] = None,
    mcp_stdio_allow_relative: Annotated[
        bool | None,
        typer.Option("--mcp-stdio-allow-relative", help=doc(C, "mcp_stdio_allow_relative")),
    ] = None,
    mcp_stdio_max_processes: Annotated[
        int | None, typer.Option(help=doc(C, "mcp_stdio_max_processes"))
    ] = None,
    mcp_session_idle: Annotated[float | None, typer.Option(help=doc(C, "mcp_session_idle"))] = None,
    mcp_max_inflight: Annotated[int | None, typer.Option(help=doc(C, "mcp_max_inflight"))] = None,
    auth_token: Annotated[str | None, typer.Option(help=doc(C, "auth_token"))] = None,
    mcp_auth_passthrough: Annotated[
        bool | None,
        typer.Option("--mcp-auth-passthrough", help=doc(C, "mcp_auth_passthrough")),
    ] = None,
    max_concurrency: Annotated[int | None, typer.Option(help=doc(C, "max_concurrency"))] = None,
    reconnect: Annotated[
        bool | None, typer.Option("--reconnect", "-r", help=doc(C, "reconnect"))
    ] = None,
    request_timeout: Annotated[float | None, typer.Option(help=doc(C, "request_timeout"))] = None,
    drain_timeout: Annotated[float | None, typer.Option(help=doc(C, "drain_timeout"))] = None,
    config_file: Annotated[str | None, typer.Option("--config", help=doc(C, "config_file"))] = None,
    status_addr: Annotated[str | None, typer.Option(help=doc(C, "status_addr"))] = None,
    metrics_port: Annotated[int | None, typer.Option(help=doc(C, "metrics_port"))] = None,
    ca_file: Annotated[str | None, typer.Option(help=doc(C, "ca_file"))] = None,
    log_format: Annotated[str | None, typer.Option(help=doc(C, "log_format"))] = None,
    log_dir: Annotated[str | None, typer.Option(help=doc(C, "log_dir"))] = None,
    log_level: Annotated[str | None, typer.Option(help=doc(C, "log_level"))] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help=PRINT_CONFIG_HELP)] = False,
    provider_args: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PROVIDER_ARGS",
            help="Arguments for the stdio provider (after --); they replace MCP_STDIO_ARGS.",
            show_default=False,
        ),
    ] = None,
) -> None:
    config = configure(McpAgentConfig, locals(), print_config=print_config)
    from nfrx.plugins.mcp.agent import provider_spec

    try:
        spec = provider_spec(config, provider_args)
    except ConfigError as exc:
        raise fail(exc) from None
    run(config, spec)


def run(config: McpAgentConfig, spec: ProviderSpec) -> None:
    """Serve ``spec``'s provider until the agent stops; a fatal reason prints as one line."""
    import trio

    from nfrx.agent.runtime import AgentExit
    from nfrx.plugins.mcp.agent import serve

    setup_logging(config, "mcp")
    try:
        trio.run(serve, config, spec)
    except AgentExit as exc:
        typer.echo(f"nfrx mcp: {exc}", err=True)
        raise typer.Exit(exc.code) from None
