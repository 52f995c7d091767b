"""The options of a command, generated from its config class; and what the commands share.

Every field of a config class (:mod:`nfrx.config.model`) is one option: named ``--<field-name>``
or as its ``flag`` metadata says, typed and parsed by the field's kind with the parser the
environment uses (:mod:`nfrx.config.values`), helped by its description, default and environment
variable, ordered by section. Adding a setting to a config class adds the option; nothing here
names a setting.
"""

from __future__ import annotations

import inspect
import warnings
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import attrs
import typer

from nfrx.config import reference, values
from nfrx.config.load import ConfigDeprecation, ConfigError, load, render

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from nfrx.config.checks import Check
    from nfrx.config.model import AgentConfig

T = TypeVar("T")

DURATIONS = (
    "A DURATION is a number of seconds (30, 1.5) or a number with units: 90s, 5m, 1h30m, 250ms "
    "(the same in the environment and in a config file)."
)
"""The closing line of the help of a command with duration options."""

PRINT_CONFIG_HELP = (
    "Print the effective settings (config file < environment < flags; secrets masked) as "
    "YAML and exit."
)


def doc(cls: type[Any], field: str) -> str:
    """Help text for ``field`` of config class ``cls``: its description, default and env var."""
    meta = attrs.fields_dict(cls)[field]
    default = meta.default
    if isinstance(default, tuple):
        default = ",".join(default)
    shown = "" if default in ("", None) or meta.metadata.get("secret") else f" [default: {default}]"
    return f"{meta.metadata['help']}{shown} [env: {meta.metadata['env']}]"


def ordered(cls: type[Any]) -> list[attrs.Attribute[Any]]:
    """The fields of ``cls`` in the order its command lists them: by section, then as first
    declared (a field a subclass redefines keeps its base class's place)."""
    place: dict[str, int] = {}
    for base in reversed(cls.__mro__):
        if attrs.has(base):
            for field in attrs.fields(base):
                place.setdefault(field.name, len(place))
    return sorted(attrs.fields(cls), key=lambda f: (f.metadata["section"], place[f.name]))


def settings_command(
    cls: type[T],
    start: Callable[..., None],
    *,
    extra: Sequence[inspect.Parameter] = (),
    checks: Mapping[str, Sequence[Check]] | None = None,
) -> Callable[..., None]:
    """The Typer command function of a command whose options are the settings of ``cls``.

    Its parameters are one option per field (:func:`ordered`), ``--print-config``, then
    ``extra``. Called by Typer, it loads the config (flags over environment over file over
    defaults; a configuration error, ``checks`` included, exits 2) and calls
    ``start(config, **extra_values)``.
    """
    kinds = values.kinds(cls)
    fields = ordered(cls)

    def command(**given: Any) -> None:
        flags = {field.name: given.pop(field.name) for field in fields}
        config = configure(cls, flags, print_config=given.pop("print_config"), checks=checks)
        start(config, **given)

    parameters = [_option(cls, field, kinds[field.name]) for field in fields]
    parameters.append(
        inspect.Parameter(
            "print_config",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--print-config", help=PRINT_CONFIG_HELP)],
        )
    )
    # Typer reads the parameters from the signature (inspect.signature honours __signature__).
    command.__signature__ = inspect.Signature([*parameters, *extra])  # type: ignore[attr-defined]
    return command


def _option(cls: type[Any], field: attrs.Attribute[Any], kind: values.Kind) -> inspect.Parameter:
    spellings = [part.strip().replace(" ", "") for part in reference.flag(field).split(",")]
    info = typer.Option(
        *spellings,
        help=doc(cls, field.name),
        metavar=kind.metavar,
        # A switch is a flag without a value; everything else is parsed like the environment.
        parser=None if kind is values.SWITCH else _flag_parser(kind.parse),
    )
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind.flag_type | None, info],
    )


def _flag_parser(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parser(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            # Typer reports it as "Invalid value for '--flag': <message>" and exits 2.
            raise typer.BadParameter(str(exc)) from exc

    return parser


def fail(exc: ConfigError) -> typer.Exit:
    typer.echo(f"nfrx: configuration error: {exc}", err=True)
    return typer.Exit(2)


def configure(
    cls: type[T],
    flags: Mapping[str, Any],
    *,
    print_config: bool,
    checks: Mapping[str, Sequence[Check]] | None = None,
) -> T:
    """The command's effective config (a configuration error exits 2; a deprecation is one
    warning line on stderr); with ``--print-config``, print it and exit 0. ``checks``: field
    checks of the command's own (see :func:`nfrx.config.load.validate`)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigDeprecation)
            config = load(cls, flags, checks=checks)
    except ConfigError as exc:
        raise fail(exc) from exc
    for warning in caught:
        if issubclass(warning.category, ConfigDeprecation):
            typer.echo(f"nfrx: warning: {warning.message}", err=True)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if print_config:
        typer.echo(render(config), nl=False)
        raise typer.Exit(0)
    return config


def setup_logging(config: Any, command: str) -> None:
    from nfrx import logs

    try:
        logs.setup(config, command=command)
    except ConfigError as exc:
        raise fail(exc) from exc


def run_agent(config: AgentConfig, command: str, args: Sequence[str] | None = None) -> None:
    """Run ``nfrx <command>``: the backend its plugin opens (:meth:`Plugin.agent_backend
    <nfrx.server.plugin.Plugin.agent_backend>`, ``args`` being the command's arguments after
    ``--``), served by the agent runtime until it stops; a fatal reason prints as one line with
    its exit status."""
    import trio

    from nfrx.agent.runtime import AgentExit, AgentRuntime
    from nfrx.plugins import plugin_class

    plugin = plugin_class(command)
    setup_logging(config, command)

    async def main() -> None:
        async with plugin.agent_backend(config, args) as served:
            await AgentRuntime(served.config, served.backend, backend_url=served.url).run()

    try:
        trio.run(main)
    except AgentExit as exc:
        typer.echo(f"nfrx {command}: {exc}", err=True)
        raise typer.Exit(exc.code) from exc
