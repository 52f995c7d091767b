"""YAML config files: where the system one lives, and reading one into field values.

Keys are the snake_case of the environment variable names (:func:`key`). Every value is
type-checked here by its setting's kind (:mod:`nfrx.config.values`), so an error can name the file
and the key; range checks happen later, on the merged config, in
:func:`nfrx.config.load.validate`.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import attrs
import yaml

from nfrx.config import values
from nfrx.config.values import ConfigDeprecation, ConfigError

__all__ = ["default_path", "key", "read"]


def default_path(
    name: str, *, platform: str | None = None, environ: dict[str, str] | None = None
) -> Path:
    """The system-wide config file of command ``name`` (used only if it exists)."""
    platform = sys.platform if platform is None else platform
    environ = dict(os.environ) if environ is None else environ
    if platform == "darwin":
        return Path("/Library/Application Support/nfrx") / f"{name}.yaml"
    if platform.startswith("win"):
        program_data = environ.get("ProgramData") or environ.get("PROGRAMDATA") or r"C:\ProgramData"
        return Path(program_data) / "nfrx" / f"{name}.yaml"
    return Path("/etc/nfrx") / f"{name}.yaml"


def key(field: attrs.Attribute[Any]) -> str:
    """The YAML key of a setting: the snake_case of its environment variable name."""
    env: str = field.metadata["env"]
    return env.lower()


def read(cls: type[Any], path: Path) -> dict[str, Any]:
    """The settings in ``path`` as field values of ``cls``, by field name.

    Raises :class:`ConfigError` (one line, naming the file and, where there is one, the key) if the
    file cannot be read, is not a YAML mapping, has a key ``cls`` does not know, or a value of the
    wrong type. A key spelled as the field's old name (``mcp_max_req_bytes`` for
    ``broker_max_req_bytes``) still works, with a :class:`ConfigDeprecation` warning.
    """
    data = _mapping(path)
    fields = {key(f): f for f in attrs.fields(cls) if f.name != "config_file"}
    old_names = {f.name: k for k, f in fields.items() if f.name != k}
    kinds = values.kinds(cls)
    out: dict[str, Any] = {}
    for given, value in data.items():
        name = _renamed(path, given, data, old_names)
        if not isinstance(name, str) or name not in fields:
            raise ConfigError(f"{path}: unknown key {name!r}{_suggest(name, fields)}")
        field = fields[name]
        if field.metadata.get("secret") and not isinstance(value, str):
            # Never echo a secret, even a mistyped one.
            raise ConfigError(
                f"{path}: {name}: expected a string (quote it), got {values.kind_of_value(value)}"
            )
        try:
            out[field.name] = kinds[field.name].accept(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {name}: {exc}") from exc
    return out


def _renamed(path: Path, given: object, data: dict[Any, Any], old_names: dict[str, str]) -> object:
    """The current spelling of the key ``given``: an old one warns, and may not stand beside
    the new one."""
    if not isinstance(given, str) or given not in old_names:
        return given
    new = old_names[given]
    if new in data:
        raise ConfigError(f"{path}: {given!r} and {new!r} are the same setting: keep {new!r}")
    warnings.warn(
        f"{path}: key {given!r} is deprecated, use {new!r}", ConfigDeprecation, stacklevel=3
    )
    return new


def _mapping(path: Path) -> dict[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {_reason(exc)}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings (key: value lines), "
            f"got {values.kind_of_value(data)}"
        )
    return data


def _suggest(name: object, fields: dict[str, Any]) -> str:
    if isinstance(name, str):
        close = difflib.get_close_matches(name.lower().replace("-", "_"), list(fields), n=1)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return " (keys are the snake_case of the environment variable names, e.g. 'api_key')"


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
