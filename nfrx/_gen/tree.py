"""The ``nfrx`` command tree as plain values, read from the Typer app's Click commands.

Typer builds the Click-style command objects (``typer.main.get_command(app)``); this module walks
them once, so the generators never touch Typer's internals. Hidden commands and options are left
out, as they are from ``--help``.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

PROGRAM = "nfrx"


@attrs.frozen
class Option:
    names: tuple[str, ...]
    """Spellings that set the option: ``("--reconnect", "-r")``."""
    negations: tuple[str, ...]
    """Spellings that unset a boolean pair: ``("--no-llm-queue-events",)``."""
    takes_value: bool
    metavar: str
    """What the value is called in help and manual pages (``HOST``, ``CONFIG_FILE``)."""
    choices: tuple[str, ...]
    files: bool
    """The value is a path (typed ``Path`` or a file): complete file names."""
    help: str
    envvar: str
    repeatable: bool


@attrs.frozen
class Argument:
    name: str
    choices: tuple[str, ...]
    help: str
    required: bool


@attrs.frozen
class Command:
    path: tuple[str, ...]
    """``("nfrx",)`` for the program, ``("nfrx", "serve")`` for a subcommand."""
    help: str
    short_help: str
    epilog: str
    """The closing text of ``--help``, after the options."""
    options: tuple[Option, ...]
    arguments: tuple[Argument, ...]
    commands: tuple[Command, ...]

    @property
    def name(self) -> str:
        """``nfrx serve``: how a user types it."""
        return " ".join(self.path)

    def walk(self) -> list[Command]:
        """This command and every command below it, depth first."""
        return [self, *(sub for command in self.commands for sub in command.walk())]


def from_app(app: Any) -> Command:
    """The tree of a ``typer.Typer`` app."""
    import typer.main

    return from_click(typer.main.get_command(app))


def from_click(root: Any) -> Command:
    """The tree of a Click-style command (Typer's ``TyperGroup``/``TyperCommand``)."""
    return _command(root, (PROGRAM,), None)


def _command(command: Any, path: tuple[str, ...], parent: Any) -> Command:
    ctx = command.context_class(command, info_name=path[-1], parent=parent)
    options: list[Option] = []
    arguments: list[Argument] = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "option":
            options.append(_option(param))
        else:
            arguments.append(_argument(param))
    subcommands: list[Command] = []
    for name in getattr(command, "commands", {}):
        sub = command.commands[name]
        if not sub.hidden:
            subcommands.append(_command(sub, (*path, name), ctx))
    return Command(
        path=path,
        help=_clean(command.help or ""),
        short_help=_clean(command.get_short_help_str(limit=300)),
        epilog=_clean(getattr(command, "epilog", None) or ""),
        options=tuple(options),
        arguments=tuple(arguments),
        commands=tuple(subcommands),
    )


def _choices(param: Any) -> tuple[str, ...]:
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None) or ()
    return tuple(str(getattr(choice, "value", choice)) for choice in choices)


def _is_path(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    return bool(getattr(descriptor, "is_path", False) or getattr(descriptor, "is_file", False))


def _option(param: Any) -> Option:
    names = sorted(param.opts, key=lambda name: (not name.startswith("--"), name))
    takes_value = not param.is_flag and not getattr(param, "count", False)
    envvar = param.envvar if isinstance(param.envvar, str) else ""
    return Option(
        names=tuple(names),
        negations=tuple(param.secondary_opts),
        takes_value=takes_value,
        metavar=(param.metavar or (param.name or "value").upper()) if takes_value else "",
        choices=_choices(param),
        files=_is_path(param),
        help=_clean(param.help or ""),
        envvar=envvar,
        repeatable=bool(param.multiple or getattr(param, "count", False)),
    )


def _argument(param: Any) -> Argument:
    return Argument(
        name=(param.metavar or param.name or "arg").upper(),
        choices=_choices(param),
        help=_clean(getattr(param, "help", None) or ""),
        required=bool(param.required),
    )


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


_TAGS = re.compile(r"\s*\[(?:default|env): [^\]]*\]")


def untagged(text: str) -> str:
    """A help text without its ``[default: ...]`` and ``[env: ...]`` tags."""
    return _TAGS.sub("", text).strip()


def summary(text: str) -> str:
    """The first sentence of a help text, untagged: what a completion menu shows next to an
    option."""
    text = untagged(text)
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    first = match.group(1) if match else text
    return first.rstrip(".")
