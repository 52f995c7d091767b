"""Request bodies streamed from the client into a tunnel stream, never held whole in memory.

An :class:`Upload` is the client's body as a one-pass source. It may start with a *spool*: the
bytes a plugin had to read before choosing an agent (the ASR plugin reads the multipart body up to
its ``model`` field). The spool is a :class:`tempfile.SpooledTemporaryFile` (in memory up to
:data:`SPOOL_MEMORY`, then on disk), replayed before the rest of the body is streamed.

Retries: an upload can be sent again only while nothing past the spool was taken from the client
(:attr:`Upload.replayable`); after that a failed attempt is final (502), because the bytes are
gone. The size limit (``MAX_UPLOAD_BYTES``) is checked on the declared ``Content-Length`` at once
and counted while reading; going over raises a 413 :class:`HttpError`, and the caller resets the
stream it was feeding.
"""

from __future__ import annotations

import math
import tempfile
from typing import TYPE_CHECKING

import trio
from werkzeug.http import parse_options_header

from nfrx.server.http_errors import HttpError
from nfrx.server.request_body import next_chunk

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nfrx.transport.streams import OutgoingStream

SPOOL_MEMORY = 1024 * 1024
"""Bytes of a spooled prefix kept in memory before it moves to a temporary file."""

REPLAY_CHUNK = 64 * 1024


def too_large(limit: int) -> HttpError:
    return HttpError(
        413,
        "request_too_large",
        f"the upload exceeds the limit of {limit} bytes",
        type="invalid_request_error",
    )


class Upload:
    """The client's request body, read once, in order. Owned by the request's handler; close
    it (a cleanup) to drop the spool."""

    def __init__(self, source: AsyncIterator[bytes], limit: int, *, idle: float = math.inf) -> None:
        self._source = source
        self.limit = limit
        self.idle = idle
        """Seconds the client may send nothing before a read raises 408 (BODY_TIMEOUT)."""
        self.received = 0
        """Bytes read from the client so far."""
        self._spool: tempfile.SpooledTemporaryFile[bytes] | None = None
        self._spooled = 0
        self._exhausted = False
        self._drawn = False
        self.field_span: tuple[int, int] | None = None
        """Where the routing field's value sits in the spool (set by :func:`read_field`)."""
        self.replacement: bytes | None = None
        """Sent instead of that value (an agent that knows the model by another name)."""

    @property
    def replayable(self) -> bool:
        """True while every byte read from the client is in the spool: the upload can be sent
        again (to another agent)."""
        return not self._drawn

    async def read(self) -> bytes:
        """The client's next chunk (``b""`` at the end). Raises 413 past the limit, 408 when the
        client sends nothing for :attr:`idle` seconds."""
        if self._exhausted:
            await trio.lowlevel.checkpoint()
            return b""
        chunk = await next_chunk(self._source, self.idle)
        if chunk is None:
            self._exhausted = True
            return b""
        self.received += len(chunk)
        if self.received > self.limit:
            raise too_large(self.limit)
        return chunk

    async def spool(self, chunk: bytes) -> None:
        """Keep ``chunk`` (just :meth:`read`) for replay."""
        if self._spool is None:
            # Closed by close(), a cleanup of the request that owns this upload.
            self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115
        self._spooled += len(chunk)
        if self._spooled > SPOOL_MEMORY:  # on disk by now: keep file I/O off the event loop
            await trio.to_thread.run_sync(self._spool.write, chunk)
        else:
            self._spool.write(chunk)

    @property
    def ended(self) -> bool:
        """The whole body has been read (into the spool, if anything read it)."""
        return self._exhausted

    async def send(self, stream: OutgoingStream) -> None:
        """Send the spool, then the rest of the body, then the end of the body, into ``stream``
        (each send waits for credit). Raises 413 past the limit, and what ``send_data`` raises."""
        spool = self._spool
        if spool is not None:
            span = self.field_span if self.replacement is not None else None
            if span is None:
                await self._replay(stream, spool, 0, None)
            else:
                await self._replay(stream, spool, 0, span[0])
                await stream.send_data(self.replacement or b"")
                await self._replay(stream, spool, span[1], None)
        if not self._exhausted:
            self._drawn = True
            while chunk := await self.read():
                await stream.send_data(chunk)
        await stream.end()

    @staticmethod
    async def _replay(
        stream: OutgoingStream,
        spool: tempfile.SpooledTemporaryFile[bytes],
        start: int,
        stop: int | None,
    ) -> None:
        """Send the spool's bytes ``start:stop`` (``stop`` None: to its end)."""
        await trio.to_thread.run_sync(spool.seek, start)
        left = -1 if stop is None else stop - start
        while left != 0:
            size = REPLAY_CHUNK if left < 0 else min(REPLAY_CHUNK, left)
            block = await trio.to_thread.run_sync(spool.read, size)
            if not block:
                break
            if left > 0:
                left -= len(block)
            await stream.send_data(block)

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, else None."""
    if not content_type:
        return None
    mimetype, options = parse_options_header(content_type)
    boundary = options.get("boundary", "")
    if mimetype.lower() != "multipart/form-data" or not boundary or len(boundary) > 200:
        return None
    return boundary.encode("latin-1", "replace")


class FieldFinder:
    """A sans-I/O scanner of a ``multipart/form-data`` body that finds one field's value.

    :meth:`feed` it the body in chunks; it returns the value once the field ended, and
    :attr:`span` says where the value sits in the body. It keeps only what it must: the current
    part's headers, the wanted value (at most ``max_value`` bytes) and a tail shorter than the
    delimiter -- file parts pass through without being held.
    """

    MAX_HEADERS = 16 * 1024

    def __init__(self, boundary: bytes, field: str, *, max_value: int = 4096) -> None:
        self._first = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._field = field
        self._max_value = max_value
        self._buffer = bytearray()
        self._offset = 0
        """Position in the body of ``_buffer[0]``."""
        self._state = "preamble"
        self._current: str | None = None
        self._value = bytearray()
        self._value_start = 0
        self.span: tuple[int, int] | None = None
        """Where the value sits in the body (start, end), once found."""

    def _drop(self, size: int) -> None:
        del self._buffer[:size]
        self._offset += size

    def feed(self, data: bytes) -> str | None:
        """The field's value once it is complete, else None. Raises ``ValueError`` on a malformed
        body or an oversized value."""
        buffer = self._buffer
        buffer += data
        while True:
            if self._state == "preamble":
                index = buffer.find(self._first)
                if index < 0:
                    self._drop(max(len(buffer) - len(self._first) + 1, 0))
                    return None
                self._drop(index + len(self._first))
                self._state = "delimited"
            if self._state == "delimited":
                if len(buffer) < 2:
                    return None
                if buffer[:2] == b"--":
                    self._state = "end"
                    self._drop(len(buffer))
                    return None
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    return None
                self._drop(line_end + 2)  # (transport padding before the CRLF is allowed)
                self._state = "headers"
            if self._state == "headers":
                index = buffer.find(b"\r\n\r\n")
                if index < 0:
                    if buffer.startswith(b"\r\n"):  # a part without headers
                        index = -2
                    elif len(buffer) > self.MAX_HEADERS:
                        raise ValueError("multipart part headers are too long")
                    else:
                        return None
                self._current = _field_name(bytes(buffer[: max(index, 0)]))
                self._drop(index + 4)
                self._value.clear()
                self._value_start = self._offset
                self._state = "body"
            if self._state == "body":
                index = buffer.find(self._delimiter)
                wanted = self._current == self._field
                if index < 0:
                    keep = max(len(buffer) - len(self._delimiter) + 1, 0)
                    if wanted:
                        self._append(buffer[:keep])
                    self._drop(keep)
                    return None
                if wanted:
                    self._append(buffer[:index])
                    self.span = (self._value_start, self._offset + index)
                    return self._value.decode("utf-8", "replace")
                self._drop(index + len(self._delimiter))
                self._state = "delimited"
            if self._state == "end":
                self._drop(len(buffer))
                return None

    def _append(self, data: bytearray) -> None:
        self._value += data
        if len(self._value) > self._max_value:
            raise ValueError(f"the {self._field!r} field is longer than {self._max_value} bytes")


def _field_name(headers: bytes) -> str | None:
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            _, options = parse_options_header(value.strip())
            field: str | None = options.get("name")
            return field
    return None


async def read_field(upload: Upload, boundary: bytes, field: str) -> str | None:
    """Read (and spool) the upload until the multipart ``field`` is complete; its value, or None
    if the body ended without it. Raises ``ValueError`` on a malformed body, 413 past the limit."""
    finder = FieldFinder(boundary, field)
    while chunk := await upload.read():
        await upload.spool(chunk)
        value = finder.feed(chunk)
        if value is not None:
            upload.field_span = finder.span
            return value
    return None
