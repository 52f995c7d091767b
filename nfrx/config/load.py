"""Build a config object from its sources.

Precedence, lowest first: built-in defaults < YAML config file < environment < command-line flags.
The file is ``--config``, else ``CONFIG_FILE``, else the system file of the command
(:func:`nfrx.config.files.default_path`) if it exists; an explicitly named file must exist.

Values from the environment are text and are parsed here by the setting's kind
(:mod:`nfrx.config.values`, the same parser the command line uses); a bad value is a
:class:`ConfigError` that names the variable (or the file and key) and says what was expected.
The checks attached to the settings (:mod:`nfrx.config.checks`) run on the merged config, with
those the caller adds for what settings cannot know (``nfrx serve`` checks ``PLUGINS`` against
its list of plugins: settings import no plugin).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import yaml

from nfrx.config import files, values
from nfrx.config.checks import enabled_plugins
from nfrx.config.values import ConfigDeprecation, ConfigError, parse_duration
from nfrx.redact import redact

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from nfrx.config.checks import Check

__all__ = [
    "OS_DEFAULT",
    "ConfigDeprecation",
    "ConfigError",
    "enabled_plugins",
    "environment",
    "load",
    "masked",
    "parse_duration",
    "render",
    "validate",
]

T = TypeVar("T")


class _OsDefault:
    def __repr__(self) -> str:
        return "OS_DEFAULT"


OS_DEFAULT: Final = _OsDefault()
"""``load(default_file=...)``: the command's system file, used if it exists."""


def load(
    cls: type[T],
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    default_file: Path | _OsDefault | None = OS_DEFAULT,
    checks: Mapping[str, Sequence[Check]] | None = None,
) -> T:
    """Merge defaults < config file < ``environ`` (default: ``os.environ``) < ``flags``.

    ``flags`` maps field names to values of the field's type (the command line parses them with
    the same parsers as the environment), None meaning "not given" (other keys are ignored).
    ``default_file`` is the file read when neither ``--config`` nor ``CONFIG_FILE`` names one
    (None: no file). ``checks`` adds field checks by field name (see :func:`validate`). Raises
    :class:`ConfigError`; warns with :class:`ConfigDeprecation` for a deprecated key in the file.
    """
    environ = os.environ if environ is None else environ
    path = _config_path(cls, flags, environ, default_file)
    from_file = files.read(cls, path) if path is not None else {}
    kinds = values.kinds(cls)
    settings: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        flag = flags.get(field.name)
        if flag is not None:
            settings[field.name] = flag
            continue
        env = _env_given(field, environ)
        if env is not None:
            try:
                settings[field.name] = kinds[field.name].parse(environ[env])
            except ValueError as exc:
                raise ConfigError(f"{env}: {exc}") from exc
        elif field.name in from_file:
            settings[field.name] = from_file[field.name]
            labels[field.name] = f"{path}: {files.key(field)}"
    if "config_file" in attrs.fields_dict(cls):  # type: ignore[arg-type]
        settings["config_file"] = str(path) if path is not None else ""
    config = cls(**settings)
    validate(config, labels, checks)
    return config


def _env_given(field: attrs.Attribute[Any], environ: Mapping[str, str]) -> str | None:
    """The environment variable that sets ``field``: its name, else one of its other names
    (``env_also``), else None."""
    for name in (field.metadata.get("env"), *field.metadata.get("env_also", ())):
        if name and name in environ:
            return str(name)
    return None


def _config_path(
    cls: type[Any],
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    default_file: Path | _OsDefault | None,
) -> Path | None:
    fields = attrs.fields_dict(cls)
    if "config_file" not in fields:
        return None
    given = flags.get("config_file")
    env = fields["config_file"].metadata["env"]
    if given is None and env in environ:
        given = environ[env]
    if given is not None:
        # Named explicitly: it must exist (files.read says so); empty means "no file at all".
        return Path(given).expanduser() if given else None
    if isinstance(default_file, _OsDefault):
        name = getattr(cls, "config_name", "")
        default_file = files.default_path(name) if name else None
    return default_file if default_file is not None and default_file.is_file() else None


def validate(
    config: Any,
    labels: Mapping[str, str] | None = None,
    checks: Mapping[str, Sequence[Check]] | None = None,
) -> None:
    """Run the checks of every setting (``setting(check=...)``, ``minimum``, ``positive``, then
    the caller's ``checks`` for that field) and of the config class (its ``checks``) on the
    merged config; raises ConfigError naming the setting.

    ``labels`` names the source of values that came from a file (``<file>: <key>``); the others
    are named by their environment variable, whichever source they came from.
    """
    labels = labels or {}
    added = checks or {}
    fields = attrs.fields_dict(type(config))

    def name(field: str) -> str:
        return labels.get(field) or fields[field].metadata.get("env", field)

    for field in fields.values():
        value = getattr(config, field.name)
        for check in (*field.metadata.get("checks", ()), *added.get(field.name, ())):
            try:
                check(value)
            except ValueError as exc:
                raise ConfigError(f"{name(field.name)}: {exc}") from exc
    for class_check in getattr(type(config), "checks", ()):
        class_check(config, name)


def environment(config: Any) -> dict[str, str]:
    """``config`` as environment variables that :func:`load` reads back into an equal config
    (with no file and no flags): how ``nfrx serve --workers`` hands its settings to each worker.
    Secrets included: the result is for a child process's environment only."""
    out: dict[str, str] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.name == "config_file":
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = str(value)
        out[field.metadata["env"]] = text
    return out


def masked(config: Any) -> dict[str, Any]:
    """The config as a dict by YAML key, secrets replaced by ``***``, the URLs in every other
    text redacted (no userinfo, no query values: :func:`nfrx.redact.redact`) and lists as lists
    (for logs and --print-config)."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.metadata.get("secret") and value:
            value = "***"
        elif isinstance(value, str):
            value = redact(value)
        elif isinstance(value, tuple):
            value = [redact(item) if isinstance(item, str) else item for item in value]
        out[files.key(field)] = value
    return out


def render(config: Any) -> str:
    """The effective config as YAML (secrets masked), the form a config file takes.

    The first line says which config file was read; the rest could be saved as one.
    """
    settings = masked(config)
    source = settings.pop("config_file", "")
    header = f"# config file: {source or 'none'}\n"
    body: str = yaml.safe_dump(settings, sort_keys=False, default_flow_style=False, width=1000)
    return header + body
