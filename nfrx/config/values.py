"""Setting values from text: durations, booleans, numbers; and the error every source raises."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A setting has a value nfrx cannot use; the message (one line) names the setting -- and the
    file, for a value from a config file -- and the problem."""


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


def convert(text: str, kind: Any) -> Any:
    """``text`` (from the environment) as a value of the field type ``kind``."""
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


def split_list(text: str) -> list[str]:
    """The items of a comma-separated setting, trimmed, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]
