"""``nfrx serve``."""

from __future__ import annotations

from typing import Annotated

import typer

from nfrx.cli.options import PRINT_CONFIG_HELP, configure, doc, setup_logging
from nfrx.config.model import ServerConfig

HELP = (
    "Run the public server: the OpenAI-compatible API for clients under /api/llm/v1 and the "
    "WebSocket endpoint agents dial (/api/llm/connect). Settings come from the environment, "
    "overridden by these options. SIGTERM/SIGINT drains gracefully; a second one stops at once."
)


def command(
    host: Annotated[str | None, typer.Option(help=doc(ServerConfig, "host"))] = None,
    port: Annotated[int | None, typer.Option(help=doc(ServerConfig, "port"))] = None,
    api_key: Annotated[str | None, typer.Option(help=doc(ServerConfig, "api_key"))] = None,
    client_key: Annotated[str | None, typer.Option(help=doc(ServerConfig, "client_key"))] = None,
    request_timeout: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "request_timeout"))
    ] = None,
    max_request_bytes: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "max_request_bytes"))
    ] = None,
    max_upload_bytes: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "max_upload_bytes"))
    ] = None,
    body_timeout: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "body_timeout"))
    ] = None,
    heartbeat_interval: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "heartbeat_interval"))
    ] = None,
    agent_dead_after: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "agent_dead_after"))
    ] = None,
    drain_timeout: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "drain_timeout"))
    ] = None,
    llm_min_score: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "llm_min_score"))
    ] = None,
    llm_queue_size: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "llm_queue_size"))
    ] = None,
    llm_queue_timeout: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "llm_queue_timeout"))
    ] = None,
    llm_queue_events: Annotated[
        bool | None,
        typer.Option(
            "--llm-queue-events/--no-llm-queue-events",
            help=doc(ServerConfig, "llm_queue_events"),
        ),
    ] = None,
    llm_queue_event_style: Annotated[
        str | None, typer.Option(help=doc(ServerConfig, "llm_queue_event_style"))
    ] = None,
    llm_queue_update_seconds: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "llm_queue_update_seconds"))
    ] = None,
    llm_idle_timeout: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "llm_idle_timeout"))
    ] = None,
    llm_max_retries: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "llm_max_retries"))
    ] = None,
    llm_max_parallel_embeddings: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "llm_max_parallel_embeddings"))
    ] = None,
    mcp_max_req_bytes: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "mcp_max_req_bytes"))
    ] = None,
    mcp_max_resp_bytes: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "mcp_max_resp_bytes"))
    ] = None,
    mcp_max_concurrency_per_client: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "mcp_max_concurrency_per_client"))
    ] = None,
    mcp_max_streams_per_client: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "mcp_max_streams_per_client"))
    ] = None,
    mcp_call_timeout: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "mcp_call_timeout"))
    ] = None,
    mcp_call_max: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "mcp_call_max"))
    ] = None,
    mcp_session_idle: Annotated[
        float | None, typer.Option(help=doc(ServerConfig, "mcp_session_idle"))
    ] = None,
    mcp_max_sessions_per_client: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "mcp_max_sessions_per_client"))
    ] = None,
    mcp_allowed_hosts: Annotated[
        str | None, typer.Option(help=doc(ServerConfig, "mcp_allowed_hosts"))
    ] = None,
    public_url: Annotated[str | None, typer.Option(help=doc(ServerConfig, "public_url"))] = None,
    config_file: Annotated[
        str | None, typer.Option("--config", help=doc(ServerConfig, "config_file"))
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help=doc(ServerConfig, "metrics_port"))
    ] = None,
    plugins: Annotated[str | None, typer.Option(help=doc(ServerConfig, "plugins"))] = None,
    allowed_origins: Annotated[
        str | None, typer.Option(help=doc(ServerConfig, "allowed_origins"))
    ] = None,
    api_http_roles: Annotated[
        str | None, typer.Option(help=doc(ServerConfig, "api_http_roles"))
    ] = None,
    client_http_roles: Annotated[
        str | None, typer.Option(help=doc(ServerConfig, "client_http_roles"))
    ] = None,
    tls_cert: Annotated[str | None, typer.Option(help=doc(ServerConfig, "tls_cert"))] = None,
    tls_key: Annotated[str | None, typer.Option(help=doc(ServerConfig, "tls_key"))] = None,
    log_format: Annotated[str | None, typer.Option(help=doc(ServerConfig, "log_format"))] = None,
    log_level: Annotated[str | None, typer.Option(help=doc(ServerConfig, "log_level"))] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help=PRINT_CONFIG_HELP)] = False,
) -> None:
    run(configure(ServerConfig, locals(), print_config=print_config))


def run(config: ServerConfig) -> None:
    import trio

    from nfrx.server.runner import run_server

    setup_logging(config, "serve")
    try:
        trio.run(run_server, config)
    except* OSError as group:
        reasons = "; ".join(str(exc) for exc in _leaves(group))
        typer.echo(f"nfrx serve: cannot listen on {config.host}:{config.port}: {reasons}", err=True)
        raise typer.Exit(1) from None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
