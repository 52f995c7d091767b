"""The ``nfrx`` command. Each subcommand module is thin: options -> config -> one library call.

Heavy imports (quart, hypercorn, httpx) happen inside the subcommands so ``nfrx --help`` and
``nfrx --version`` stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from nfrx.cli import asr, completion, docling, keys, llm, man, mcp, serve, status
from nfrx.cli.options import DURATIONS

app = typer.Typer(
    name="nfrx",
    help="Put private AI services behind one public gateway. Run 'nfrx serve' on the public "
    "host; run an agent ('nfrx llm') next to each private service: it dials out to the server, "
    "so the private side never opens a port.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    # One completion mechanism: the static scripts of `nfrx completion` (no Python on <TAB>).
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from nfrx._build import build_info

        info = build_info()
        typer.echo(f"nfrx {info['version']} (sha {info['sha']}, built {info['date']})")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """nfrx: a gateway for private AI services."""


app.command("serve", help=serve.HELP, epilog=DURATIONS, no_args_is_help=False)(serve.command)
app.command("llm", help=llm.HELP, epilog=DURATIONS, no_args_is_help=False)(llm.command)
app.command("mcp", help=mcp.HELP, epilog=DURATIONS, no_args_is_help=False)(mcp.command)
app.command("docling", help=docling.HELP, epilog=DURATIONS, no_args_is_help=False)(docling.command)
app.command("asr", help=asr.HELP, epilog=DURATIONS, no_args_is_help=False)(asr.command)
app.command("status", help=status.HELP, no_args_is_help=False)(status.command)
app.add_typer(keys.app, name="keys", help=keys.HELP)
app.command("completion", help=completion.HELP)(completion.command)
app.command("man", help=man.HELP)(man.command)


def main() -> None:
    app()
