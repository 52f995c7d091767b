"""YAML config files: where the system one lives, and reading one into field values.

Keys are the config's field names (the snake_case of the environment variable names). Every
value is type-checked here, so an error can name the file and the key; range checks happen later,
on the merged config, in :func:`nfrx.config.load.validate`.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any

import attrs
import yaml

from nfrx.config.values import ConfigError, parse_duration

__all__ = ["default_path", "read"]


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


def read(cls: type[Any], path: Path) -> dict[str, Any]:
    """The settings in ``path`` as field values of ``cls``.

    Raises :class:`ConfigError` (one line, naming the file and, where there is one, the key) if the
    file cannot be read, is not a YAML mapping, has a key ``cls`` does not know, or a value of the
    wrong type.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {_reason(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings (key: value lines), got {_kind(data)}"
        )
    fields = {f.name: f for f in attrs.fields(cls) if f.name != "config_file"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggest(key, fields)}")
        values[key] = _typed(path, fields[key], value)
    return values


def _typed(path: Path, field: attrs.Attribute[Any], value: Any) -> Any:
    kind = field.type
    name = field.name
    if field.metadata.get("secret") and not isinstance(value, str):
        # Never echo a secret, even a mistyped one.
        raise ConfigError(f"{path}: {name}: expected a string (quote it), got {_kind(value)}")
    if kind in (bool, "bool"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: {name}: expected true or false, got {_shown(value)}")
    if kind in (int, "int"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: {name}: expected a whole number, got {_shown(value)}")
    if kind in (float, "float"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: {name}: expected a finite number, got {value}")
            return float(value)
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise ConfigError(f"{path}: {name}: {exc}") from None
        raise ConfigError(
            f"{path}: {name}: expected a number of seconds (or a duration such as 90s, 5m), "
            f"got {_shown(value)}"
        )
    if kind in (str, "str"):
        if isinstance(value, str):
            return value
        if field.metadata.get("listed") and isinstance(value, list):
            if all(isinstance(item, str) for item in value):
                return ",".join(value)
            raise ConfigError(f"{path}: {name}: expected a list of strings, got {_shown(value)}")
        expected = "a string or a list of strings" if field.metadata.get("listed") else "a string"
        raise ConfigError(f"{path}: {name}: expected {expected} (quote it), got {_shown(value)}")
    raise TypeError(f"unsupported setting type {kind!r}")


def _suggest(key: object, fields: dict[str, Any]) -> str:
    if isinstance(key, str):
        close = difflib.get_close_matches(key.lower().replace("-", "_"), list(fields), n=1)
        if close:
            return f" (did you mean {close[0]!r}?)"
    return " (keys are the snake_case of the environment variable names, e.g. 'api_key')"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _shown(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list | dict):
        return _kind(value)
    return f"{_kind(value)} ({value!r})"


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
