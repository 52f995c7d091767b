"""How a setting is declared: an attrs field carrying its environment variable, help, checks and
command-line spelling (:func:`setting`), the settings every command shares (:func:`shared`), and
where a setting stands in its command's options (:class:`Section`).

The config classes themselves are in :mod:`nfrx.config.server` and :mod:`nfrx.config.agents`;
:mod:`nfrx.config.model` gathers them.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from nfrx.config.checks import (
    LOG_FORMATS,
    LOG_LEVELS,
    Check,
    above_zero,
    at_least,
    one_of,
)

MiB = 1024 * 1024


class Section(enum.IntEnum):
    """Where a setting stands among its command's options (``--help``, the manual page): how an
    agent reaches the server, what it serves, how much at once, how the process runs."""

    TUNNEL = 0
    SERVICE = 1
    CAPACITY = 2
    PROCESS = 3


def setting(
    default: Any,
    *,
    env: str,
    doc: str,
    secret: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    check: Check | None = None,
    flag: str = "",
    section: Section = Section.SERVICE,
    env_also: tuple[str, ...] = (),
) -> Any:
    """An attrs field documented with its environment variable.

    The field's type decides how its value is read (:mod:`nfrx.config.values`: ``Seconds`` for
    a duration, ``tuple[str, ...]`` for a comma-separated list); its YAML key is the snake_case
    of ``env``. ``minimum`` (inclusive), ``positive`` (strictly above zero) and ``check`` (see
    :mod:`nfrx.config.checks`) are checked when a config is loaded, with an error naming the
    variable. ``flag`` is the command-line spelling when it is not ``--<field-name>``
    (``"--reconnect, -r"``; a boolean pair as ``"--x / --no-x"``). The command's options are
    generated from these fields (:mod:`nfrx.cli.options`), ordered by ``section``.
    ``env_also``: other environment names read when ``env`` is unset (the original's spelling).
    """
    checks: list[Check] = []
    if minimum is not None:
        checks.append(at_least(minimum))
    if positive:
        checks.append(above_zero())
    if check is not None:
        checks.append(check)
    return attrs.field(
        default=default,
        metadata={
            "env": env,
            "help": doc,
            "secret": secret,
            "checks": tuple(checks),
            "flag": flag,
            "section": section,
            "env_also": env_also,
        },
    )


SHARED: dict[str, dict[str, Any]] = {
    "config_file": {
        "default": "",
        "env": "CONFIG_FILE",
        "doc": "YAML file with settings (keys: the snake_case of the environment names). "
        "Environment variables override it, flags override both. Default: the system file "
        "(/etc/nfrx/<command>.yaml on Linux) if it exists.",
        "flag": "--config",
    },
    "log_format": {
        "default": "text",
        "env": "LOG_FORMAT",
        "doc": "text (readable) or json (one JSON object per line).",
        "check": one_of(*LOG_FORMATS),
    },
    "log_level": {
        "default": "info",
        "env": "LOG_LEVEL",
        "doc": "debug, info, warning or error.",
        "check": one_of(*LOG_LEVELS),
    },
}
"""Settings every command has, declared once: :func:`shared` makes each class's field."""


def shared(name: str, section: Section = Section.PROCESS) -> Any:
    """A new field for the shared setting ``name`` (:data:`SHARED`)."""
    spec = dict(SHARED[name])
    return setting(spec.pop("default"), section=section, **spec)


def env_name(cls: type[Any], field: str) -> str:
    env: str = attrs.fields_dict(cls)[field].metadata["env"]
    return env
