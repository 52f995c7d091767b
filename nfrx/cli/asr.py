"""``nfrx asr``."""

from __future__ import annotations

from typing import Annotated

import typer

from nfrx.cli.options import doc, fail
from nfrx.cli.serve import PRINT_CONFIG_HELP
from nfrx.config.load import ConfigError, load, render
from nfrx.config.model import AsrAgentConfig

HELP = (
    "Run a speech-to-text agent next to an OpenAI-compatible transcription backend "
    "(faster-whisper-server, speaches, ...). It dials the server's /api/asr/connect, announces "
    "the backend's models and relays transcriptions and translations to ASR_BASE_URL. "
    "SIGTERM/SIGINT drains gracefully; a second one stops at once."
)

C = AsrAgentConfig


def command(
    server_url: Annotated[str | None, typer.Option(help=doc(C, "server_url"))] = None,
    client_key: Annotated[str | None, typer.Option(help=doc(C, "client_key"))] = None,
    client_id: Annotated[str | None, typer.Option(help=doc(C, "client_id"))] = None,
    client_name: Annotated[str | None, typer.Option(help=doc(C, "client_name"))] = None,
    asr_base_url: Annotated[str | None, typer.Option(help=doc(C, "asr_base_url"))] = None,
    asr_api_key: Annotated[str | None, typer.Option(help=doc(C, "asr_api_key"))] = None,
    asr_models: Annotated[str | None, typer.Option(help=doc(C, "asr_models"))] = None,
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
) -> None:
    try:
        config = load(AsrAgentConfig, locals())
    except ConfigError as exc:
        raise fail(exc) from None
    if print_config:
        typer.echo(render(config), nl=False)
        raise typer.Exit(0)
    run(config)


def run(config: AsrAgentConfig) -> None:
    import trio

    from nfrx import logs
    from nfrx.agent.proxy import backend_client
    from nfrx.agent.runtime import AgentExit, AgentRuntime
    from nfrx.plugins.asr.agent import AsrBackend

    try:
        logs.setup(config, command="asr")
    except ConfigError as exc:
        raise fail(exc) from None

    async def main() -> None:
        async with backend_client(config.max_concurrency) as client:
            backend = AsrBackend(config, client)
            await AgentRuntime(config, backend, backend_url=backend.base_url).run()

    try:
        trio.run(main)
    except AgentExit as exc:
        typer.echo(f"nfrx asr: {exc}", err=True)
        raise typer.Exit(exc.code) from None
