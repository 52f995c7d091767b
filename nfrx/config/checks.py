"""Checks on settings, attached where they are declared (:mod:`nfrx.config.model`).

A field check (``setting(check=...)``, ``minimum=``, ``positive=``) receives the setting's final
value and raises ``ValueError`` with the problem; :func:`nfrx.config.load.validate` puts the
setting's name in front (its environment variable, or the file and key it came from). A class
check (a config class's ``checks``) sees the whole config, for rules that tie settings together,
and raises :class:`~nfrx.config.values.ConfigError` itself, naming settings with the ``name``
function it is given.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from nfrx.config.values import ConfigError

Check = Callable[[Any], None]
"""A field check: raises ValueError (the problem, without the setting's name)."""

ClassCheck = Callable[[Any, Callable[[str], str]], None]
"""A class check: ``check(config, name)``, where ``name(field)`` is how to call a setting in
an error; raises ConfigError."""

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

QUEUE_EVENT_STYLES = ("comments", "events")
"""``LLM_QUEUE_EVENT_STYLE`` (and the ``X-Nfrx-Queue-Events`` request header)."""


def at_least(minimum: float) -> Check:
    def check(value: float) -> None:
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g}, got {value}")

    return check


def above_zero(unit: str = "") -> Check:
    """Strictly positive; ``unit`` names what is counted (``"seconds"``)."""
    what = f"a positive number of {unit}" if unit else "a positive number"

    def check(value: float) -> None:
        if not value > 0:
            raise ValueError(f"must be {what}, got {value}")

    return check


def one_of(*choices: str) -> Check:
    """One of ``choices``, in any case."""

    def check(value: str) -> None:
        if value.lower() not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")

    return check


def tcp_port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port (0-65535)")


def origins(value: tuple[str, ...]) -> None:
    """Browser origins (``scheme://host[:port]``) or ``*``."""
    for origin in value:
        if origin == "*":
            continue
        scheme, sep, rest = origin.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(
                f"{origin!r} is not an origin (scheme://host[:port], no path, "
                "e.g. https://app.example.com; or '*')"
            )


def enabled_plugins(names: tuple[str, ...], known: tuple[str, ...]) -> tuple[str, ...]:
    """The plugins a ``PLUGINS`` value enables among ``known`` (the composition's list: settings
    import no plugin), in ``known``'s order.

    Raises ValueError for an unknown name or an empty value.
    """
    lowered = [name.lower() for name in names]
    if not lowered:
        raise ValueError("empty (use 'all', 'none' or a list such as 'llm')")
    if lowered == ["none"]:
        return ()
    if "all" in lowered:
        return known
    unknown = [name for name in lowered if name not in known]
    if unknown:
        raise ValueError(f"unknown plugin {unknown[0]!r} (known: {', '.join(known)}; or all, none)")
    return tuple(p for p in known if p in lowered)


def ca_bundle(path: str) -> None:
    """A readable PEM CA bundle, when set."""
    if not path:
        return
    _readable(path)
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{path} is not a PEM CA bundle: {_ssl_reason(exc)}") from exc


def tls_pair(config: Any, name: Callable[[str], str]) -> None:
    """``tls_cert`` and ``tls_key``: both or neither, readable, and a certificate with its key."""
    cert, key = config.tls_cert, config.tls_key
    if not cert and not key:
        return
    if not key:
        raise ConfigError(f"{name('tls_key')}: missing: TLS_CERT is set, and https needs both")
    if not cert:
        raise ConfigError(f"{name('tls_cert')}: missing: TLS_KEY is set, and https needs both")
    for field, path in (("tls_cert", cert), ("tls_key", key)):
        try:
            _readable(path)
        except ValueError as exc:
            raise ConfigError(f"{name(field)}: {exc}") from exc
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{name('tls_cert')}: cannot use {cert} with {key}: {_ssl_reason(exc)}"
        ) from exc


def redis_address(value: str) -> None:
    """A ``REDIS_URL`` nfrx can use, when set (parsed only: nothing connects here)."""
    if value:
        from nfrx.cluster.address import parse

        parse(value)


def workers_need_redis(config: Any, name: Callable[[str], str]) -> None:
    """``--workers`` above 1 needs ``REDIS_URL``: the workers must share their agents' view."""
    if config.workers > 1 and not config.redis_url:
        raise ConfigError(
            f"{name('workers')}: {config.workers} workers need REDIS_URL (a Redis the workers "
            "share): without it each worker would be a gateway of its own, and agents and "
            "clients would reach different ones"
        )


def _readable(path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
