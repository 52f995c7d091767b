"""Build a config object from its sources.

Precedence, lowest first: built-in defaults < YAML config file < environment < command-line flags.
The file is ``--config``, else ``CONFIG_FILE``, else the system file of the command
(:func:`nfrx.config.files.default_path`) if it exists; an explicitly named file must exist.

Values from the environment are text and are converted to the field's type here; a bad value is a
:class:`ConfigError` that names the variable (or the file and key) and says what was expected.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import yaml

from nfrx.config import files
from nfrx.config.values import ConfigError, convert, parse_duration, split_list
from nfrx.plugins import SERVER_PLUGINS
from nfrx.redact import redact

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "OS_DEFAULT",
    "ConfigError",
    "enabled_plugins",
    "load",
    "masked",
    "parse_duration",
    "render",
    "validate",
]

T = TypeVar("T")

LOG_FORMATS = ("text", "json")

QUEUE_EVENT_STYLES = ("comments", "events")
"""``LLM_QUEUE_EVENT_STYLE`` (and the ``X-Nfrx-Queue-Events`` request header)."""


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
) -> T:
    """Merge defaults < config file < ``environ`` (default: ``os.environ``) < ``flags``.

    ``flags`` maps field names to values, None meaning "not given" (other keys are ignored).
    ``default_file`` is the file read when neither ``--config`` nor ``CONFIG_FILE`` names one
    (None: no file). Raises :class:`ConfigError`.
    """
    environ = os.environ if environ is None else environ
    path = _config_path(cls, flags, environ, default_file)
    from_file = files.read(cls, path) if path is not None else {}
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        flag = flags.get(field.name)
        if flag is not None:
            values[field.name] = flag
            continue
        env = field.metadata.get("env")
        if env and env in environ:
            try:
                values[field.name] = convert(environ[env], field.type)
            except ValueError as exc:
                raise ConfigError(f"{env}: {exc}") from None
        elif field.name in from_file:
            values[field.name] = from_file[field.name]
            labels[field.name] = f"{path}: {field.name}"
    if "config_file" in attrs.fields_dict(cls):  # type: ignore[arg-type]
        values["config_file"] = str(path) if path is not None else ""
    config = cls(**values)
    validate(config, labels)
    return config


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


def validate(config: Any, labels: Mapping[str, str] | None = None) -> None:
    """Checks on the merged config; raises ConfigError naming the setting.

    ``labels`` names the source of values that came from a file (``<file>: <key>``); the others
    are named by their environment variable, whichever source they came from.
    """
    labels = labels or {}
    fields = attrs.fields_dict(type(config))

    def name(field: str) -> str:
        return labels.get(field) or fields[field].metadata.get("env", field)

    for field in fields.values():
        value = getattr(config, field.name)
        env = name(field.name)
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
        if field.name == "log_format" and value.lower() not in LOG_FORMATS:
            raise ConfigError(f"{env}: {value!r} is not one of {', '.join(LOG_FORMATS)}")
        if field.name == "llm_queue_event_style" and value.lower() not in QUEUE_EVENT_STYLES:
            raise ConfigError(f"{env}: {value!r} is not one of {', '.join(QUEUE_EVENT_STYLES)}")
        if field.name == "plugins":
            try:
                enabled_plugins(value)
            except ValueError as exc:
                raise ConfigError(f"{env}: {exc}") from None
        if field.name == "allowed_origins":
            _check_origins(env, value)
    if "tls_cert" in fields:
        _check_tls(config.tls_cert, config.tls_key, name("tls_cert"), name("tls_key"))
    if "ca_file" in fields and config.ca_file:
        _check_ca(config.ca_file, name("ca_file"))


def enabled_plugins(spec: str) -> tuple[str, ...]:
    """The plugins a ``PLUGINS`` value enables, in :data:`SERVER_PLUGINS` order.

    Raises ValueError for an unknown name or an empty value.
    """
    names = [item.lower() for item in split_list(spec)]
    if not names:
        raise ValueError("empty (use 'all', 'none' or a list such as 'llm')")
    if names == ["none"]:
        return ()
    if "all" in names:
        return SERVER_PLUGINS
    unknown = [n for n in names if n not in SERVER_PLUGINS]
    if unknown:
        raise ValueError(
            f"unknown plugin {unknown[0]!r} (known: {', '.join(SERVER_PLUGINS)}; or all, none)"
        )
    return tuple(p for p in SERVER_PLUGINS if p in names)


def _check_origins(label: str, value: str) -> None:
    for origin in split_list(value):
        if origin == "*":
            continue
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ConfigError(
                f"{label}: {origin!r} is not an origin (scheme://host[:port], no path, "
                "e.g. https://app.example.com; or '*')"
            )


def _check_tls(cert: str, key: str, cert_label: str, key_label: str) -> None:
    if not cert and not key:
        return
    if not key:
        raise ConfigError(f"{key_label}: missing: TLS_CERT is set, and https needs both")
    if not cert:
        raise ConfigError(f"{cert_label}: missing: TLS_KEY is set, and https needs both")
    for label, path in ((cert_label, cert), (key_label, key)):
        _check_readable(label, path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{cert_label}: cannot use {cert} with {key}: {_ssl_reason(exc)}"
        ) from None


def _check_ca(path: str, label: str) -> None:
    _check_readable(label, path)
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{label}: {path} is not a PEM CA bundle: {_ssl_reason(exc)}") from None


def _check_readable(label: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def masked(config: Any) -> dict[str, Any]:
    """The config as a dict with secrets replaced by ``***`` and the URLs in every other text
    redacted (no userinfo, no query values: :func:`nfrx.redact.redact`), for logs and
    --print-config."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if field.metadata.get("secret") and value:
            value = "***"
        elif isinstance(value, str):
            value = redact(value)
        out[field.name] = value
    return out


def render(config: Any) -> str:
    """The effective config as YAML (secrets masked), the form a config file takes.

    The first line says which config file was read; the rest could be saved as one.
    """
    values = masked(config)
    source = values.pop("config_file", "")
    header = f"# config file: {source or 'none'}\n"
    body: str = yaml.safe_dump(values, sort_keys=False, default_flow_style=False, width=1000)
    return header + body
