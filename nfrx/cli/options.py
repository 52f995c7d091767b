"""Shared pieces of the command definitions: help text comes from the config model's metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import typer

from nfrx.config.load import ConfigError, load, render

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import httpx

    from nfrx.config.model import AgentConfig

T = TypeVar("T")

PRINT_CONFIG_HELP = (
    "Print the effective settings (config file < environment < flags; secrets masked) as "
    "YAML and exit."
)


def doc(cls: type[Any], field: str) -> str:
    """Help text for ``field`` of config class ``cls``: its description, default and env var."""
    meta = attrs.fields_dict(cls)[field]
    default = meta.default
    shown = "" if default in ("", None) or meta.metadata.get("secret") else f" [default: {default}]"
    return f"{meta.metadata['help']}{shown} [env: {meta.metadata['env']}]"


def fail(exc: ConfigError) -> typer.Exit:
    typer.echo(f"nfrx: configuration error: {exc}", err=True)
    return typer.Exit(2)


def configure(cls: type[T], flags: Mapping[str, Any], *, print_config: bool) -> T:
    """The command's effective config (a configuration error exits 2); with ``--print-config``,
    print it and exit 0."""
    try:
        config = load(cls, flags)
    except ConfigError as exc:
        raise fail(exc) from None
    if print_config:
        typer.echo(render(config), nl=False)
        raise typer.Exit(0)
    return config


def setup_logging(config: Any, command: str) -> None:
    from nfrx import logs

    try:
        logs.setup(config, command=command)
    except ConfigError as exc:
        raise fail(exc) from None


def run_agent(
    config: AgentConfig, command: str, make_backend: Callable[[httpx.AsyncClient], Any]
) -> None:
    """Run ``nfrx <command>``: a backend built around one pooled HTTP client, served by the agent
    runtime until it stops; a fatal reason prints as one line with its exit status."""
    import trio

    from nfrx.agent.proxy import backend_client
    from nfrx.agent.runtime import AgentExit, AgentRuntime

    setup_logging(config, command)

    async def main() -> None:
        async with backend_client(config.max_concurrency) as client:
            backend = make_backend(client)
            await AgentRuntime(config, backend, backend_url=backend.base_url).run()

    try:
        trio.run(main)
    except AgentExit as exc:
        typer.echo(f"nfrx {command}: {exc}", err=True)
        raise typer.Exit(exc.code) from None
