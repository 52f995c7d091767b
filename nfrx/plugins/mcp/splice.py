"""Replace a few values inside one JSON message without re-encoding anything else.

The stdio bridge rewrites JSON-RPC ids (and a few id-like members) between what a client sent
and what the provider process saw. ``json.loads`` + ``json.dumps`` would reshape the rest of the
message (number spelling, key order, escapes, duplicate keys), so the bridge instead *locates*
the byte span of each member it rewrites with :func:`locate` and splices new JSON text into those
spans with :func:`splice`; every other byte stays as the peer wrote it.

The scanner assumes well-formed JSON (callers ``json.loads`` the message first, which also gives
them the values). It jumps with regular expressions implemented in C, so a large string (an
image in base64, say) costs one regex match, not a Python loop per byte.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

Path = tuple[str, ...]
"""Object member names from the top of the message, e.g. ``("params", "requestId")``."""

Span = tuple[int, int]

_STRING_REST: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""The rest of a JSON string after its opening quote, closing quote included."""
_STRUCTURAL: Final = re.compile(rb'["\[\]{}]')
_SCALAR: Final = re.compile(rb"[^,\]}\s]*")
_SPACE: Final = re.compile(rb"[ \t\r\n]*")


def locate(data: bytes, wanted: Collection[Path]) -> dict[Path, Span]:
    """Byte spans of the members at ``wanted`` paths that exist (the last one of duplicated
    keys wins, as with ``json.loads``). ``data`` must be well-formed JSON."""
    spans: dict[Path, Span] = {}
    start = _SPACE.match(data, 0)
    assert start is not None
    pos = start.end()
    if pos < len(data) and data[pos : pos + 1] == b"{" and wanted:
        _object(data, pos, (), frozenset(wanted), spans)
    return spans


def splice(data: bytes, replacements: Mapping[Span, bytes]) -> bytes:
    """``data`` with each span replaced by its new bytes (spans must not overlap)."""
    out: list[bytes] = []
    at = 0
    for (start, end), text in sorted(replacements.items()):
        out.append(data[at:start])
        out.append(text)
        at = end
    out.append(data[at:])
    return b"".join(out)


def _object(
    data: bytes, pos: int, prefix: Path, wanted: frozenset[Path], spans: dict[Path, Span]
) -> int:
    """Scan the object at ``pos`` (its ``{``); return the index past its ``}``."""
    pos = _skip_space(data, pos + 1)
    if data[pos : pos + 1] == b"}":
        return pos + 1
    while True:
        key_end = _string_end(data, pos)
        raw_key = data[pos + 1 : key_end - 1]
        key = raw_key.decode() if b"\\" not in raw_key else json.loads(data[pos:key_end])
        pos = _skip_space(data, key_end)
        pos = _skip_space(data, pos + 1)  # the colon
        path = (*prefix, key)
        if path in wanted:
            end = _value_end(data, pos)
            spans[path] = (pos, end)
        elif data[pos : pos + 1] == b"{" and any(w[: len(path)] == path for w in wanted):
            end = _object(data, pos, path, wanted, spans)
        else:
            end = _value_end(data, pos)
        pos = _skip_space(data, end)
        if data[pos : pos + 1] == b"}":
            return pos + 1
        pos = _skip_space(data, pos + 1)  # the comma


def _skip_space(data: bytes, pos: int) -> int:
    match = _SPACE.match(data, pos)
    assert match is not None
    return match.end()


def _string_end(data: bytes, pos: int) -> int:
    match = _STRING_REST.match(data, pos + 1)
    if match is None:
        raise ValueError("unterminated JSON string")
    return match.end()


def _value_end(data: bytes, pos: int) -> int:
    first = data[pos : pos + 1]
    if first == b'"':
        return _string_end(data, pos)
    if first in (b"{", b"["):
        depth = 0
        at = pos
        while True:
            match = _STRUCTURAL.search(data, at)
            if match is None:
                raise ValueError("unterminated JSON container")
            char = match.group()
            if char == b'"':
                at = _string_end(data, match.start())
                continue
            depth += 1 if char in (b"{", b"[") else -1
            at = match.end()
            if depth == 0:
                return at
    match = _SCALAR.match(data, pos)
    assert match is not None
    return match.end()
