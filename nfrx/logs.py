"""Logging set-up for the command-line processes (called from the CLI only).

Text (readable lines) or JSON (one object per line: time, level, logger, message) on stderr, and
for agents with LOG_DIR also a rotating file. JSON uses the standard library: the four fields and
an optional traceback need no extra dependency. Secrets never reach a log: the code does not log
them, and every configured secret value is masked in each formatted line as a second line of
defence (an exception message quoting a header, say); so are the credentials and query values of
every URL in it (:func:`nfrx.redact.redact`).

One record is one line: the text format escapes control characters in the message (``\\n`` and
``\\r`` as such, others as ``\\xNN``), so an agent name or id with a newline cannot forge a line of
its own. JSON escapes them by itself. A traceback keeps its lines.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from nfrx.config.values import ConfigError
from nfrx.redact import redact

if TYPE_CHECKING:
    from collections.abc import Iterable

LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5
MIN_SECRET_LENGTH = 4
"""Shorter secret values are not masked in log lines (masking every "ab" would garble logs)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    and ``exception`` when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if code != 0x09},
    0x0A: "\\n",
    0x0D: "\\r",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
"""What :class:`TextFormatter` writes for a control character (or a Unicode line break)."""


class TextFormatter(logging.Formatter):
    """The readable format, one line per record: control characters in the message escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPES)


class _Masking(logging.Formatter):
    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def format(self, record: logging.LogRecord) -> str:
        line = self._inner.format(record)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return redact(line)


def configure(
    level: str,
    *,
    fmt: str = "text",
    log_file: Path | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Log to stderr (and to the rotating ``log_file`` if given, creating its directory).

    Raises :class:`ConfigError` if the log file cannot be opened.
    """
    secrets = tuple(secrets)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(_Masking(_formatter(fmt, file=False), secrets))
    handlers: list[logging.Handler] = [stream]
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            rotating = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError(f"LOG_DIR: cannot write {log_file}: {exc.strerror or exc}") from exc
        rotating.setFormatter(_Masking(_formatter(fmt, file=True), secrets))
        handlers.append(rotating)
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # hypercorn logs every closed keep-alive connection at INFO; keep its warnings only.
    logging.getLogger("hypercorn.error").setLevel(max(logging.WARNING, root.level))
    for noisy in ("httpx", "httpcore", "trio-websocket", "quart.serving"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def setup(config: Any, *, command: str = "") -> None:
    """:func:`configure` from a command's config: ``log_level``, ``log_format``, ``log_dir``
    (file ``nfrx-<command>.log``) and every secret setting's value."""
    log_dir = getattr(config, "log_dir", "")
    log_file = Path(log_dir).expanduser() / f"nfrx-{command}.log" if log_dir else None
    secrets = [
        getattr(config, f.name) for f in attrs.fields(type(config)) if f.metadata.get("secret")
    ]
    configure(
        config.log_level,
        fmt=getattr(config, "log_format", "text"),
        log_file=log_file,
        secrets=[s for s in secrets if s],
    )


def _formatter(fmt: str, *, file: bool) -> logging.Formatter:
    if fmt.lower() == "json":
        return JsonFormatter()
    # A file outlives the day: its lines carry the date.
    datefmt = "%Y-%m-%d %H:%M:%S" if file else "%H:%M:%S"
    return TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt)
