"""Decoding an HTTP/1.1 ``Transfer-Encoding: chunked`` response body (pure: no I/O).

Why not h11's reader: a token stream is hundreds of tiny chunks per response, and h11 makes each
one an event (a state-machine step, a validated ``Data`` object: ~5 µs here), which was 40 % of
the agent's CPU relaying such a stream. :class:`ChunkedDecoder` turns everything one socket read
brought into one ``bytes`` with a ``find`` and a slice per chunk.

It is as strict as h11 0.16 where it matters for framing (RFC 9112 7.1): a chunk size is 1-16
hex digits, optionally followed by extensions (ignored); every chunk's data must be followed by
CRLF; the body ends with a zero-size chunk, optional trailer lines (ignored, at most
:data:`MAX_LINE_BYTES` each and :data:`MAX_TRAILER_BYTES` in all) and an empty line. Anything
else raises :class:`ChunkedError`; so does a size line longer than :data:`MAX_LINE_BYTES`.
"""

from __future__ import annotations

import re
from typing import Final

MAX_LINE_BYTES: Final = 4096
"""Longest chunk-size line (extensions included) or trailer line accepted."""

MAX_TRAILER_BYTES: Final = 64 * 1024
"""Most bytes of trailer lines accepted after the last chunk."""

_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
"""A chunk-size line without its CRLF: the size, then optional whitespace and extensions."""

_SIZE_LINE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedError(Exception):
    """The bytes are not a valid chunked body."""


class ChunkedDecoder:
    """Feed it the raw body bytes as they arrive; it returns the decoded data of each feed."""

    def __init__(self) -> None:
        self._pending = b""
        """Raw bytes received but not decoded yet (an incomplete line or CRLF)."""
        self._state = _SIZE_LINE
        self._remaining = 0
        """Data bytes still to come in the current chunk."""
        self._trailer_bytes = 0
        self.leftover = b""
        """Bytes that came after the end of the body (once :attr:`done`)."""

    @property
    def done(self) -> bool:
        """True once the last chunk and the end of the trailer section were decoded."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bytes:
        """The body data contained in ``data`` (after what was pending), possibly ``b""``.

        Raises :class:`ChunkedError` on invalid framing. Bytes fed after :attr:`done` are
        added to :attr:`leftover`.
        """
        if self._state == _DONE:
            self.leftover += data
            return b""
        buffer = self._pending + data if self._pending else data
        size = len(buffer)
        pos = 0
        out: list[bytes] = []
        while pos < size:
            state = self._state
            if state == _DATA:
                end = min(pos + self._remaining, size)
                out.append(buffer[pos:end])
                self._remaining -= end - pos
                pos = end
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if size - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE_LINE
            elif state == _SIZE_LINE:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    if size - pos > MAX_LINE_BYTES:
                        raise ChunkedError(f"chunk size line longer than {MAX_LINE_BYTES} bytes")
                    break
                match = _SIZE.fullmatch(buffer, pos, line_end)
                if match is None:
                    raise ChunkedError(f"invalid chunk size line {buffer[pos:line_end][:40]!r}")
                pos = line_end + 2
                self._remaining = int(match[1], 16)
                self._state = _DATA if self._remaining else _TRAILER
            elif state == _TRAILER:
                line_end = buffer.find(b"\r\n", pos)
                if line_end < 0:
                    if size - pos > MAX_LINE_BYTES:
                        raise ChunkedError(f"trailer line longer than {MAX_LINE_BYTES} bytes")
                    break
                if line_end == pos:
                    self._state = _DONE
                    self.leftover = buffer[pos + 2 :]
                    pos = size
                    break
                self._trailer_bytes += line_end + 2 - pos
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    raise ChunkedError(f"trailers longer than {MAX_TRAILER_BYTES} bytes")
                pos = line_end + 2
        self._pending = buffer[pos:] if pos < size else b""
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)
