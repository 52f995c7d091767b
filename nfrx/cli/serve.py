"""``nfrx serve``."""

from __future__ import annotations

import typer

from nfrx.cli.options import settings_command, setup_logging
from nfrx.config.model import ServerConfig
from nfrx.plugins import check_names

HELP = (
    "Run the public server: the OpenAI-compatible API for clients under /api/llm/v1 and the "
    "WebSocket endpoint agents dial (/api/llm/connect). Settings come from the environment, "
    "overridden by these options. SIGTERM/SIGINT drains gracefully; a second one stops at once."
)


CHECKS = {"plugins": (check_names,)}
"""What the settings cannot check themselves (they import no plugin): ``PLUGINS`` against the
list of plugins."""

# ``run`` is looked up when the command runs, so that tests can replace it.
command = settings_command(ServerConfig, lambda config: run(config), checks=CHECKS)


def run(config: ServerConfig) -> None:
    import trio

    from nfrx.exception_groups import leaves
    from nfrx.plugins.keys.store import StoreError
    from nfrx.server.runner import run_server

    setup_logging(config, "serve")
    if config.workers > 1:
        from nfrx.cluster.workers import supervise

        try:
            status = trio.run(supervise, config)
        except* OSError as group:
            reasons = "; ".join(str(exc) for exc in leaves(group))
            typer.echo(f"nfrx serve: cannot reserve the workers' ports: {reasons}", err=True)
            raise typer.Exit(1) from group
        raise typer.Exit(status)
    try:
        trio.run(run_server, config)
    except* StoreError as group:
        reasons = "; ".join(str(exc) for exc in leaves(group))
        typer.echo(f"nfrx serve: cannot read the client keys: {reasons}", err=True)
        raise typer.Exit(1) from group
    except* OSError as group:
        reasons = "; ".join(str(exc) for exc in leaves(group))
        typer.echo(f"nfrx serve: cannot listen on {config.host}:{config.port}: {reasons}", err=True)
        raise typer.Exit(1) from group
