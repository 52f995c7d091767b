"""Setting values from their sources, by kind; and the error every source raises.

A setting's kind follows from its field's type: ``str``, ``int``, ``float`` (a plain number),
:data:`Seconds` (a duration), ``bool`` or ``tuple[str, ...]`` (a comma-separated list). Each
kind has ONE parser for text, used for the environment and the command line alike, and one
acceptor for the typed values of a YAML file; both raise ``ValueError`` with the problem, and
the caller puts the setting's name in front.
"""

from __future__ import annotations

import math
import re
import typing
from typing import TYPE_CHECKING, Any, NewType

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

Seconds = NewType("Seconds", float)
"""A duration setting: float seconds, written ``30``, ``1.5``, ``90s``, ``5m``, ``1h30m`` or
``250ms`` in every source (environment, flag, YAML)."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """A setting has a value nfrx cannot use; the message (one line) names the setting -- and the
    file, for a value from a config file -- and the problem."""


class ConfigDeprecation(FutureWarning):
    """A config file uses a spelling that still works but is deprecated; the message (one line)
    names the file, the old spelling and the new one."""


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


def split_list(text: str) -> tuple[str, ...]:
    """The items of a comma-separated setting, trimmed, empty ones dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a whole number") from exc


def parse_number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a number") from exc
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


# -- YAML values --------------------------------------------------------------------------------


def _accept_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string (quote it), got {shown(value)}")


def _accept_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {shown(value)}")


def _accept_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"expected a whole number, got {shown(value)}")


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a YAML number (not a boolean), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value}")
        return float(value)
    return None


def _accept_number(value: Any) -> float:
    number = _finite(value)
    if number is None:
        raise ValueError(f"expected a number, got {shown(value)}")
    return number


def _accept_duration(value: Any) -> float:
    number = _finite(value)
    if number is not None:
        return number
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(
        f"expected a number of seconds (or a duration such as 90s, 5m), got {shown(value)}"
    )


def _accept_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return split_list(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(item.strip() for item in value if item.strip())
    if isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {shown(value)}")
    raise ValueError(f"expected a string or a list of strings (quote it), got {shown(value)}")


def kind_of_value(value: Any) -> str:
    """What a YAML value is, in words (never the value itself: it may be a secret)."""
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


def shown(value: Any) -> str:
    """A YAML value for an error message: its kind, and the value when it is a scalar."""
    if value is None:
        return "nothing"
    if isinstance(value, list | dict):
        return kind_of_value(value)
    return f"{kind_of_value(value)} ({value!r})"


# -- kinds --------------------------------------------------------------------------------------


@attrs.frozen
class Kind:
    """How the values of one type of setting are read."""

    parse: Callable[[str], Any]
    """Text (an environment variable, a command-line flag) to a value."""
    accept: Callable[[Any], Any]
    """A YAML value to a value."""
    flag_type: type
    """The type the command line declares (Typer shows ``<str>``, ``<int>``... for it)."""
    metavar: str | None = None
    """What ``--help`` calls the value instead, if anything."""


TEXT = Kind(str, _accept_str, str)
WHOLE = Kind(parse_int, _accept_int, int)
NUMBER = Kind(parse_number, _accept_number, float)
DURATION = Kind(parse_duration, _accept_duration, float, metavar="DURATION")
SWITCH = Kind(parse_bool, _accept_bool, bool)
LIST = Kind(split_list, _accept_list, str)

KINDS: dict[Any, Kind] = {
    str: TEXT,
    int: WHOLE,
    float: NUMBER,
    Seconds: DURATION,
    bool: SWITCH,
    tuple[str, ...]: LIST,
}


def kinds(cls: type[Any]) -> dict[str, Kind]:
    """The kind of every setting of config class ``cls``, by field name.

    Raises TypeError for a field whose type has no kind (a new type needs a row in
    :data:`KINDS`).
    """
    hints = typing.get_type_hints(cls)
    out: dict[str, Kind] = {}
    for field in attrs.fields(cls):
        kind = KINDS.get(hints[field.name])
        if kind is None:
            raise TypeError(f"{cls.__name__}.{field.name}: unsupported setting type")
        out[field.name] = kind
    return out
