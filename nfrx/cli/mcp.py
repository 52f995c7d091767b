"""``nfrx mcp``."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated

import typer

from nfrx.cli.options import fail, run_agent, settings_command
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

PROVIDER_ARGS = inspect.Parameter(
    "provider_args",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PROVIDER_ARGS",
            help="Arguments for the stdio provider (after --); they replace MCP_STDIO_ARGS.",
            show_default=False,
        ),
    ],
)


def start(config: McpAgentConfig, provider_args: list[str] | None) -> None:
    """Check the provider settings (a problem exits 2), then :func:`run`."""
    from nfrx.plugins.mcp.agent import provider_spec

    try:
        spec = provider_spec(config, provider_args)
    except ConfigError as exc:
        raise fail(exc) from exc
    run(config, spec)


command = settings_command(McpAgentConfig, start, extra=(PROVIDER_ARGS,))


def run(config: McpAgentConfig, spec: ProviderSpec) -> None:
    """Serve ``spec``'s provider until the agent stops; a fatal reason prints as one line."""
    run_agent(config, "mcp", spec.args if spec.transport == "stdio" else None)
