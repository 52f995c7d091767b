"""``nfrx llm``."""

from __future__ import annotations

from typing import Annotated

import typer

from nfrx.cli.options import PRINT_CONFIG_HELP, configure, doc, run_agent
from nfrx.config.model import LlmAgentConfig

HELP = (
    "Run an LLM agent next to an OpenAI-compatible backend (Ollama, llama.cpp, vLLM, ...). It "
    "dials the server's /api/llm/connect, announces the backend's models and relays requests to "
    "COMPLETION_BASE_URL. SIGTERM/SIGINT drains gracefully; a second one stops at once."
)

C = LlmAgentConfig


def command(
    server_url: Annotated[str | None, typer.Option(help=doc(C, "server_url"))] = None,
    client_key: Annotated[str | None, typer.Option(help=doc(C, "client_key"))] = None,
    client_id: Annotated[str | None, typer.Option(help=doc(C, "client_id"))] = None,
    client_name: Annotated[str | None, typer.Option(help=doc(C, "client_name"))] = None,
    completion_base_url: Annotated[
        str | None, typer.Option(help=doc(C, "completion_base_url"))
    ] = None,
    completion_api_key: Annotated[
        str | None, typer.Option(help=doc(C, "completion_api_key"))
    ] = None,
    max_concurrency: Annotated[int | None, typer.Option(help=doc(C, "max_concurrency"))] = None,
    model_poll_interval: Annotated[
        float | None, typer.Option(help=doc(C, "model_poll_interval"))
    ] = None,
    embedding_batch_size: Annotated[
        int | None, typer.Option(help=doc(C, "embedding_batch_size"))
    ] = None,
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
    run(configure(LlmAgentConfig, locals(), print_config=print_config))


def run(config: LlmAgentConfig) -> None:
    from nfrx.plugins.llm.agent import LlmBackend

    run_agent(config, "llm", lambda client: LlmBackend(config, client))
