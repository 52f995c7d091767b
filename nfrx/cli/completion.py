"""``nfrx completion``: print the static completion script for a shell."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

HELP = (
    "Print the completion script for SHELL (bash, zsh or fish) to standard output. Load it "
    "with 'source <(nfrx completion bash)' in ~/.bashrc, 'source <(nfrx completion zsh)' in "
    "~/.zshrc (after compinit) or 'nfrx completion fish | source' in config.fish, or save it "
    "where the shell looks for completions. The scripts are static: no Python runs on <TAB>."
)


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def command(
    ctx: typer.Context,
    shell: Annotated[Shell, typer.Argument(help="The shell to print the script for.")],
) -> None:
    from nfrx._gen import completion, tree

    # The root of the command line being run is the whole `nfrx` app, this command included.
    root = tree.from_click(ctx.find_root().command)
    typer.echo(completion.script(shell.value, root), nl=False)
