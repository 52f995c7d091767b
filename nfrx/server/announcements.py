"""What an agent may announce about itself, and the limits on it.

An agent is only half trusted (anyone holding ``CLIENT_KEY`` can open a tunnel, anyone at all when
it is unset), and what it announces in its Hello and Status frames is kept for as long as it is
connected, listed by ``/v1/models`` and ``/api/state``, and echoed in logs. So every field it
controls is bounded:

======================= =================================== ================================
field                   limit                               set by
======================= =================================== ================================
models                  1,000 per agent                     ``AGENT_MAX_MODELS``
a model name            256 UTF-8 bytes                     ``AGENT_MAX_MODEL_NAME_BYTES``
agent id, name          256 UTF-8 bytes each                :data:`MAX_IDENTITY_BYTES`
agent version, status   64 UTF-8 bytes each                 :data:`MAX_LABEL_BYTES`
options                 64 pairs of 4 KiB (name + value)    :data:`MAX_OPTIONS`,
                                                            :data:`MAX_OPTION_BYTES`
======================= =================================== ================================

A Hello over a limit is refused with a ``Refuse`` frame (code :data:`OVER_LIMIT`, which the agent
treats as fatal: retrying sends the same announcement); a Status over a limit closes the tunnel
with the same message as its reason (the agent logs it, and, reconnecting, is refused for good).
The tunnel protocol bounds the size of a whole frame besides (:mod:`nfrx.protocol.codec`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from nfrx.config.model import ServerConfig
    from nfrx.protocol import Hello, Status

OVER_LIMIT: Final = "over_limit"
"""The Refuse code of a Hello over a limit."""

MAX_IDENTITY_BYTES: Final = 256
"""Longest agent id and agent name (UTF-8 bytes)."""
MAX_LABEL_BYTES: Final = 64
"""Longest agent version and status string (UTF-8 bytes)."""
MAX_OPTIONS: Final = 64
"""Most Hello options."""
MAX_OPTION_BYTES: Final = 4096
"""Longest Hello option, name and value together (UTF-8 bytes)."""


class OverLimit(Exception):
    """An announcement exceeds a limit; the message says which, for the agent's operator."""


@attrs.frozen(kw_only=True)
class AnnouncementLimits:
    max_models: int = 1000
    max_model_name_bytes: int = 256

    @classmethod
    def of(cls, config: ServerConfig) -> AnnouncementLimits:
        return cls(
            max_models=config.agent_max_models,
            max_model_name_bytes=config.agent_max_model_name_bytes,
        )


def check_hello(hello: Hello, limits: AnnouncementLimits) -> None:
    """Raise :class:`OverLimit` if ``hello`` exceeds a limit."""
    _check_text("agent id", hello.agent_id, MAX_IDENTITY_BYTES)
    _check_text("agent name", hello.name, MAX_IDENTITY_BYTES)
    _check_text("agent version", hello.agent_version, MAX_LABEL_BYTES)
    _check_text("status", hello.status, MAX_LABEL_BYTES)
    _check_models(hello.models, limits)
    if len(hello.options) > MAX_OPTIONS:
        raise OverLimit(f"{len(hello.options)} options; at most {MAX_OPTIONS} accepted")
    for name, value in hello.options:
        size = _utf8_size(name) + _utf8_size(value)
        if size > MAX_OPTION_BYTES:
            raise OverLimit(
                f"option {_excerpt(name)} is {size} bytes; at most {MAX_OPTION_BYTES} accepted"
            )


def check_status(status: Status, limits: AnnouncementLimits) -> None:
    """Raise :class:`OverLimit` if ``status`` exceeds a limit."""
    _check_text("status", status.status, MAX_LABEL_BYTES)
    _check_models(status.models, limits)


def _check_models(models: tuple[str, ...], limits: AnnouncementLimits) -> None:
    if len(models) > limits.max_models:
        raise OverLimit(
            f"{len(models)} models announced; at most {limits.max_models} accepted "
            "(AGENT_MAX_MODELS)"
        )
    for model in models:
        size = _utf8_size(model)
        if size > limits.max_model_name_bytes:
            raise OverLimit(
                f"model name {_excerpt(model)} is {size} bytes; at most "
                f"{limits.max_model_name_bytes} accepted (AGENT_MAX_MODEL_NAME_BYTES)"
            )


def _check_text(field: str, value: str, limit: int) -> None:
    size = _utf8_size(value)
    if size > limit:
        raise OverLimit(f"{field} {_excerpt(value)} is {size} bytes; at most {limit} accepted")


def _utf8_size(text: str) -> int:
    # Cheap for the common case (ASCII: as many bytes as characters); a JSON string may hold
    # lone surrogates, which "surrogatepass" counts instead of failing on.
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _excerpt(text: str, limit: int = 16) -> str:
    """The start of ``text``, quoted, in ASCII with control characters escaped, at most ``limit``
    characters of it: messages name what was refused without echoing all of it (and fit in a
    WebSocket close reason)."""
    shown = ascii(text[:limit])[1:-1]
    if len(shown) > limit or len(text) > limit:
        return f"'{shown[:limit]}'..."
    return f"'{shown}'"
