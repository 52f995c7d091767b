"""HTTP header rules shared by the server and the agents (a leaf: it imports nothing of ours).

:func:`check_response_head` is the one validator of an HTTP response head (pure: no I/O). An
agent's head is untrusted input -- the agent is only half trusted, and a head hypercorn cannot
send (a 1xx status, a header with CR/LF, a bad ``content-length``) used to break the client's
connection or, for a 101, end the whole server process. It is called in exactly two places:

* the tunnel, where every agent's head arrives (:meth:`OutgoingStream._set_response
  <nfrx.transport.streams.OutgoingStream>`), so every relay (LLM, docling, asr, MCP) gets the check
  without asking for it: a head that fails it resets the stream with ``bad_agent_response``, and
  the body that follows is held to its ``content-length`` there too;
* the server's last-resort guard (:mod:`nfrx.server.guard`), on every response start the app
  hands hypercorn, which only ever catches a bug of ours.

A ``content-length`` passed on to the client binds the body that follows: h11 (hypercorn's
HTTP/1.1) refuses to send a byte more or to end the body a byte short, raising mid-response (a
traceback in the log, the connection cut). The tunnel therefore holds an agent's body to its
declared length and fails the stream on a mismatch, so the server reports it itself; relayed
event streams drop the header, since the relay may end them with an error event of its own.
"""

from __future__ import annotations

import re
from typing import Final

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers about one connection, not the message: dropped at every hop (RFC 9110 7.6.1)."""

MAX_RESPONSE_HEADERS: Final = 128
"""Most header lines a response head may carry (backends send a dozen or two)."""

MAX_RESPONSE_HEAD_BYTES: Final = 64 * 1024
"""Largest response head, counted as the sum of its names' and values' lengths."""

MAX_CONTENT_LENGTH_DIGITS: Final = 18
"""A ``content-length`` of more digits is refused (h11's own limit is 20)."""

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
"""A header name: an RFC 9110 token."""

_BAD_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
"""Control characters (tab excepted) -- CR, LF and NUL above all, which would split the head --
and lone surrogates (JSON can carry them; they cannot be encoded)."""


def check_response_head(status: int, headers: tuple[tuple[str, str], ...]) -> str | None:
    """Why ``status`` and ``headers`` cannot be sent to an HTTP client as a final response head,
    or None when they can.

    The rules are those of h11 and hypercorn (what they would refuse, raising mid-response) made
    strict: a final status (200-599); at most :data:`MAX_RESPONSE_HEADERS` headers and
    :data:`MAX_RESPONSE_HEAD_BYTES` in all; names that are tokens; values without control
    characters or lone surrogates; at most one ``content-length``, a non-negative integer;
    ``transfer-encoding`` only ``chunked``, once.
    """
    if not 200 <= status <= 599:
        return f"status {status} is not a final response status (200-599)"
    if len(headers) > MAX_RESPONSE_HEADERS:
        return f"{len(headers)} headers (at most {MAX_RESPONSE_HEADERS})"
    size = 0
    lengths = 0
    encodings = 0
    for name, value in headers:
        size += len(name) + len(value)
        if size > MAX_RESPONSE_HEAD_BYTES:
            return f"the headers exceed {MAX_RESPONSE_HEAD_BYTES} bytes"
        if not _TOKEN.fullmatch(name):
            return f"invalid header name {name[:64]!r}"
        if _BAD_VALUE.search(value):
            return f"control character in the value of header {name!r}"
        lower = name.lower()
        if lower == "content-length":
            lengths += 1
            if lengths > 1:
                return "more than one content-length header"
            if content_length(value) is None:
                return f"invalid content-length {value[:64]!r}"
        elif lower == "transfer-encoding":
            encodings += 1
            if encodings > 1 or value.strip().lower() != "chunked":
                return f"unsupported transfer-encoding {value[:64]!r}"
    return None


def content_length(value: str) -> int | None:
    """The value of a ``content-length`` header as an int, or None if it is not a plain
    non-negative decimal integer (surrounding spaces allowed) of at most
    :data:`MAX_CONTENT_LENGTH_DIGITS` digits."""
    digits = value.strip(" \t")
    if not digits or len(digits) > MAX_CONTENT_LENGTH_DIGITS or not digits.isascii():
        return None
    return int(digits) if digits.isdigit() else None


def declared_length(headers: tuple[tuple[str, str], ...]) -> int | None:
    """The ``content-length`` of a head that passed :func:`check_response_head`, or None."""
    for name, value in headers:
        if name.lower() == "content-length":
            return content_length(value)
    return None
