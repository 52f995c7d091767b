"""Build a config object from its sources: built-in defaults < environment < command-line flags.

Values from the environment are text and are converted to the field's type here; a bad value is a
:class:`ConfigError` that names the variable and says what was expected.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

T = TypeVar("T")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A setting has a value nfrx cannot use; the message names the setting and the problem."""


def parse_duration(text: str) -> float:
    """Seconds from ``"30"``, ``"1.5"``, ``"90s"``, ``"5m"``, ``"1h30m"`` or ``"250ms"``."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number of seconds")
        return value
    if text.startswith("-"):
        return -parse_duration(text[1:])
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration (examples: 30, 1.5, 90s, 5m, 1h30m)")
    return total


def _convert(text: str, kind: Any) -> Any:
    if kind in (str, "str"):
        return text
    if kind in (bool, "bool"):
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{text!r} is not a boolean (true/false)")
    if kind in (int, "int"):
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if kind in (float, "float"):
        return parse_duration(text)
    raise TypeError(f"unsupported setting type {kind!r}")


def load(cls: type[T], flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> T:
    """Merge defaults < ``environ`` (default: ``os.environ``) < ``flags`` (None = not given)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        flag = flags.get(field.name)
        if flag is not None:
            values[field.name] = flag
            continue
        env = field.metadata.get("env")
        if env and env in environ:
            try:
                values[field.name] = _convert(environ[env], field.type)
            except ValueError as exc:
                raise ConfigError(f"{env}: {exc}") from None
    config = cls(**values)
    validate(config)
    return config


def validate(config: Any) -> None:
    """Range checks every config shares; raises ConfigError naming the setting."""
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        env = field.metadata.get("env", field.name)
        minimum = field.metadata.get("minimum")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{env}: must be at least {minimum:g}, got {value}")
        if field.metadata.get("positive") and value <= 0:
            raise ConfigError(f"{env}: must be a positive number, got {value}")
        if field.name == "port" and not 0 <= value <= 65535:
            raise ConfigError(f"{env}: {value} is not a TCP port (0-65535)")
        if field.name == "max_concurrency" and value < 1:
            raise ConfigError(f"{env}: must be at least 1, got {value}")
        if field.name in ("request_timeout", "heartbeat_interval", "agent_dead_after") and (
            value <= 0
        ):
            raise ConfigError(f"{env}: must be a positive number of seconds, got {value}")
        if field.name == "max_request_bytes" and value < 1:
            raise ConfigError(f"{env}: must be a positive number of bytes, got {value}")
        if field.name == "log_level" and value.lower() not in (
            "debug",
            "info",
            "warning",
            "error",
        ):
            raise ConfigError(f"{env}: {value!r} is not one of debug, info, warning, error")


def masked(config: Any) -> dict[str, Any]:
    """The config as a dict with secrets replaced by ``***`` (for logs and --print-config)."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        out[field.name] = "***" if field.metadata.get("secret") and value else value
    return out
