"""Bytes on the wire <-> frame values. The one cattrs converter of the tunnel lives here.

Layout:

* control frames -- a WebSocket **text** message: one JSON object, ``{"type": "<name>", ...}``
  with the fields of the frame class (``None`` values and defaults are sent as-is).
* :class:`~nfrx.protocol.frames.Data` -- a WebSocket **binary** message::

      byte 0     kind     0x01 = stream data
      byte 1     flags    bit 0 = END (last frame of this direction's body)
      bytes 2-5  stream id, unsigned 32-bit big-endian
      bytes 6-   payload, verbatim

* a **batch** -- a WebSocket **binary** message carrying several of the above, in order (the
  sender's writer packs what it has queued into one message: fewer messages, fewer syscalls)::

      byte 0     kind     0x02 = batch
      then, once per message (at least one):
      byte 0     0x00 = a control frame (UTF-8 JSON), 0x01 = a Data frame (the layout above)
      bytes 1-4  length, unsigned 32-bit big-endian
      bytes 5-   the message

  A batch never holds another batch, nor more than :data:`MAX_BATCH_FRAMES` messages.
  :func:`split_batch` unpacks one; :meth:`~nfrx.protocol.connection.TunnelConnection.receive`
  accepts both forms.

Limits (what one message from a peer can make the receiver do is bounded; a message over them is
a :class:`~nfrx.protocol.errors.RemoteProtocolError`, which closes the tunnel):

* a batch holds at most :data:`MAX_BATCH_FRAMES` (1,024) messages. A sender's writer never packs
  more; a receiver splits at most that many before refusing the batch.
* a control frame's JSON text is at most :data:`MAX_CONTROL_CHARS` characters for its type
  (ASCII: bytes), checked before it is parsed against the largest of them (4 MiB):

  ========================================= =========== ======================================
  frame                                     limit       why
  ========================================= =========== ======================================
  Hello, Status                             4 MiB       model lists (the server's
                                                        ``AGENT_MAX_MODELS`` and
                                                        ``AGENT_MAX_MODEL_NAME_BYTES`` bound
                                                        them far lower by default)
  Open, Response                            1 MiB       HTTP heads (hypercorn and httpx read
                                                        at most 16 and 100 KiB of them)
  Members                                   1 MiB       the gateway's instances and URLs
  Welcome, Refuse, Reset, Drain, Goodbye    64 KiB      reasons and messages
  Ping, Pong, Credit, Load                  4 KiB       a few numbers
  ========================================= =========== ======================================

* a Data frame's payload is bounded by the stream's window (the connection enforces it), and a
  whole WebSocket message by the WebSocket layer (16 MiB on both sides).

:func:`decode` accepts *any* ``str | bytes`` and either returns a valid frame or raises
:class:`~nfrx.protocol.errors.RemoteProtocolError`; no other exception escapes it (the property
tests feed it arbitrary input).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Final

import attrs
import cattrs

from nfrx.protocol.errors import LocalProtocolError, RemoteProtocolError
from nfrx.protocol.frames import (
    CONTROL_FRAMES,
    MAX_STREAM_ID,
    MAX_WINDOW,
    Credit,
    Data,
    Frame,
    Headers,
)

DATA_KIND: Final = 0x01
BATCH_KIND: Final = 0x02
FLAG_END: Final = 0x01
_HEADER = struct.Struct(">BBI")
HEADER_BYTES: Final = _HEADER.size
_ITEM = struct.Struct(">BI")
ITEM_TEXT: Final = 0x00
ITEM_BINARY: Final = 0x01
_BATCH_PREFIX: Final = bytes([BATCH_KIND])

_BY_TYPE: Final[dict[str, type[Frame]]] = {
    str(attrs.fields(cls).type.default): cls for cls in CONTROL_FRAMES
}

MAX_BATCH_FRAMES: Final = 1024
"""Most messages one batch may hold (see the module docstring)."""

_KiB: Final = 1024
MAX_CONTROL_CHARS: Final[dict[str, int]] = {
    "hello": 4096 * _KiB,
    "status": 4096 * _KiB,
    "members": 1024 * _KiB,
    "open": 1024 * _KiB,
    "response": 1024 * _KiB,
    "welcome": 64 * _KiB,
    "refuse": 64 * _KiB,
    "reset": 64 * _KiB,
    "drain": 64 * _KiB,
    "goodbye": 64 * _KiB,
    "ping": 4 * _KiB,
    "pong": 4 * _KiB,
    "credit": 4 * _KiB,
    "load": 4 * _KiB,
}
"""Longest JSON text of each control frame type, in characters (see the module docstring)."""

_MAX_ANY_CONTROL_CHARS: Final = max(MAX_CONTROL_CHARS.values())


def _strict(kind: type[Any]) -> Any:
    # cattrs would happily turn "5" into 5 or 1 into True; on the wire we want exact JSON types.
    def structure(value: Any, _: type[Any]) -> Any:
        if type(value) is kind:
            return value
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    return structure


def _structure_float(value: Any, _: type[Any]) -> float:
    if type(value) in (int, float):
        try:
            number = float(value)
        except OverflowError as exc:
            raise TypeError("number out of range") from exc
        if math.isfinite(number):
            return number
    raise TypeError(f"expected a finite number, got {type(value).__name__}")


def _structure_strings(value: Any, _: type[Any]) -> tuple[str, ...]:
    # Without this, cattrs would turn the string "abc" into ("a", "b", "c").
    if type(value) is list and all(type(item) is str for item in value):
        return tuple(value)
    raise TypeError("expected an array of strings")


def _structure_headers(value: Any, _: type[Any]) -> Headers:
    if type(value) is list and all(
        type(pair) is list and len(pair) == 2 and all(type(x) is str for x in pair)
        for pair in value
    ):
        return tuple((pair[0], pair[1]) for pair in value)
    raise TypeError("expected an array of [name, value] string pairs")


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)
    converter.register_structure_hook(str, _strict(str))
    converter.register_structure_hook(int, _strict(int))
    converter.register_structure_hook(bool, _strict(bool))
    converter.register_structure_hook(float, _structure_float)
    strings: Any = tuple[str, ...]
    headers: Any = Headers
    converter.register_structure_hook_func(lambda t: t == strings, _structure_strings)
    converter.register_structure_hook_func(lambda t: t == headers, _structure_headers)
    return converter


converter: Final = _make_converter()
"""The wire converter (control frames <-> JSON-compatible dicts)."""


def encode(frame: Frame) -> str | bytes:
    """Serialize ``frame`` for the WebSocket: ``bytes`` for Data, ``str`` for everything else."""
    if isinstance(frame, Data):
        return encode_data(frame.stream_id, frame.payload, end=frame.end)
    return json.dumps(converter.unstructure(frame), separators=(",", ":"), ensure_ascii=False)


def encode_data(stream_id: int, payload: bytes, *, end: bool = False) -> bytes:
    """Serialize a Data frame without building the frame object (the hot path)."""
    if not 0 < stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"stream id {stream_id} out of range")
    return _HEADER.pack(DATA_KIND, FLAG_END if end else 0, stream_id) + payload


def encode_batch(messages: list[str | bytes]) -> bytes:
    """Pack encoded messages (from :func:`encode` / :func:`encode_data`) into one batch."""
    if not messages:
        raise LocalProtocolError("an empty batch")
    if len(messages) > MAX_BATCH_FRAMES:
        raise LocalProtocolError(
            f"a batch of {len(messages)} messages (at most {MAX_BATCH_FRAMES})"
        )
    pack = _ITEM.pack
    parts = [_BATCH_PREFIX]
    for message in messages:
        if isinstance(message, str):
            raw = message.encode()
            parts.append(pack(ITEM_TEXT, len(raw)))
        else:
            raw = message
            parts.append(pack(ITEM_BINARY, len(raw)))
        parts.append(raw)
    return b"".join(parts)


def is_batch(message: str | bytes) -> bool:
    return isinstance(message, (bytes, bytearray, memoryview)) and message[:1] == _BATCH_PREFIX


def split_batch(message: bytes) -> list[str | bytes]:
    """The messages of a batch, in order; RemoteProtocolError if it is malformed or holds more
    than :data:`MAX_BATCH_FRAMES` messages (found after splitting at most that many)."""
    view = memoryview(message)
    if view[:1] != _BATCH_PREFIX:
        raise RemoteProtocolError("not a batch")
    items: list[str | bytes] = []
    offset = 1
    end = len(view)
    item_bytes = _ITEM.size
    while offset < end:
        if end - offset < item_bytes:
            raise RemoteProtocolError("batch item header cut short")
        tag, size = _ITEM.unpack_from(view, offset)
        offset += item_bytes
        if size > end - offset:
            raise RemoteProtocolError(f"batch item of {size} bytes runs past the message")
        if len(items) == MAX_BATCH_FRAMES:
            raise RemoteProtocolError(f"a batch of more than {MAX_BATCH_FRAMES} messages")
        raw = view[offset : offset + size]
        offset += size
        if tag == ITEM_TEXT:
            try:
                items.append(str(raw, "utf-8"))
            except UnicodeDecodeError as exc:
                raise RemoteProtocolError("batch item is not UTF-8 text") from exc
        elif tag == ITEM_BINARY:
            if raw[:1] == _BATCH_PREFIX:
                raise RemoteProtocolError("a batch inside a batch")
            items.append(bytes(raw))
        else:
            raise RemoteProtocolError(f"unknown batch item tag 0x{tag:02x}")
    if not items:
        raise RemoteProtocolError("an empty batch")
    return items


def decode(message: str | bytes) -> Frame:
    """Parse one WebSocket message into a validated frame.

    Raises :class:`RemoteProtocolError` for anything that is not a well-formed frame.
    """
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _decode_binary(bytes(message))
    if isinstance(message, str):
        return _decode_text(message)
    raise RemoteProtocolError(f"unexpected message type {type(message).__name__}")


def _decode_binary(message: bytes) -> Data:
    if len(message) < HEADER_BYTES:
        raise RemoteProtocolError(f"binary frame of {len(message)} bytes is shorter than a header")
    kind, flags, stream_id = _HEADER.unpack_from(message)
    if kind != DATA_KIND:
        raise RemoteProtocolError(f"unknown binary frame kind 0x{kind:02x}")
    if flags & ~FLAG_END:
        raise RemoteProtocolError(f"unknown data flags 0x{flags:02x}")
    if stream_id == 0:
        raise RemoteProtocolError("data frame for stream 0")
    return Data(stream_id=stream_id, payload=message[HEADER_BYTES:], end=bool(flags & FLAG_END))


def _decode_text(message: str) -> Frame:
    if len(message) > _MAX_ANY_CONTROL_CHARS:
        raise RemoteProtocolError(
            f"control frame of {len(message)} characters (at most {_MAX_ANY_CONTROL_CHARS})"
        )
    try:
        obj = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"control frame is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RemoteProtocolError("control frame is not a JSON object")
    name = obj.get("type")
    cls = _BY_TYPE.get(name) if isinstance(name, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown control frame type {_excerpt(name)}")
    limit = MAX_CONTROL_CHARS[str(name)]
    if len(message) > limit:
        raise RemoteProtocolError(f"{name} frame of {len(message)} characters (at most {limit})")
    try:
        frame: Frame = converter.structure(obj, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RemoteProtocolError(f"invalid {name} frame: {exc}") from exc
    check_ranges(frame)
    return frame


def check_ranges(frame: Frame) -> None:
    """Raise RemoteProtocolError if a field of ``frame`` is outside its valid range."""
    stream_id = getattr(frame, "stream_id", None)
    if stream_id is not None and not 0 < stream_id <= MAX_STREAM_ID:
        raise RemoteProtocolError(f"stream id {stream_id} out of range")
    if isinstance(frame, Credit) and not 0 < frame.increment <= MAX_WINDOW:
        raise RemoteProtocolError(f"credit increment {frame.increment} out of range")
    window = getattr(frame, "window", None)
    if window is not None and not 0 < window <= MAX_WINDOW:
        raise RemoteProtocolError(f"window {window} out of range")
    for field in ("max_concurrency", "embedding_batch_size", "elsewhere"):
        value = getattr(frame, field, 0)
        if value < 0:
            raise RemoteProtocolError(f"{field} {value} is negative")
    status = getattr(frame, "status", None)
    if isinstance(status, int) and not 100 <= status <= 599:
        raise RemoteProtocolError(f"HTTP status {status} out of range")


def _excerpt(value: object, limit: int = 40) -> str:
    """``repr`` of ``value``, cut to about ``limit`` characters (error messages echo what a peer
    sent: it must not make them arbitrarily long)."""
    text = repr(value[:limit] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[:limit] + "..."
