"""Token usage read from relayed LLM responses as their bytes pass through (pure: no I/O).

The proxy feeds every response body chunk to a :class:`UsageMeter` on its way to the client and
reads :attr:`UsageMeter.usage` when the exchange ends; whole streams are never buffered.

Recognised ``usage`` objects (extra fields such as cache or reasoning details are ignored):

* OpenAI chat, completions and embeddings: ``prompt_tokens`` / ``completion_tokens``
  (``total_tokens`` is not used; embeddings carry no completion count, so output is 0);
* OpenAI Responses API: ``input_tokens`` / ``output_tokens``, also under ``response.usage`` in
  ``response.completed`` events;
* Anthropic Messages: ``input_tokens`` / ``output_tokens``; in a stream ``message_start`` carries
  ``message.usage`` and each ``message_delta`` a ``usage`` whose output count is the running total.

``input_tokens`` wins over ``prompt_tokens`` and ``output_tokens`` over ``completion_tokens``
when both are present. A count must be a plain non-negative ``int`` (not ``bool``) of at most
:data:`MAX_COUNT`; anything else is ignored as if absent. Nothing here raises on garbage.

Plain bodies are accumulated up to ``max_json_bytes`` (past that the meter gives up: usage None)
and parsed once, when the usage is read; the shallowest ``usage`` object wins (:func:`find_usage`).

Event streams (``text/event-stream``) are split into lines across chunk boundaries (``\\n`` or
``\\r\\n``, split at any byte). Only ``data:`` lines are looked at, one line being one JSON value;
``[DONE]`` is skipped and a line is decoded only when it contains ``"usage": {`` (a cheap byte
filter: OpenAI streams with ``include_usage`` carry ``"usage": null`` in every chunk). Streams may
report usage several times -- one final chunk (OpenAI ``include_usage``), input in ``message_start``
and output in ``message_delta`` (Anthropic), cumulative counts in every chunk (some servers) -- so
per field the last value seen wins; counts are never summed. A line longer than
:data:`MAX_LINE_BYTES` is dropped, which bounds the memory held for an unterminated line. A final
line without a terminator is still read, and reading :attr:`UsageMeter.usage` mid-stream is fine.
"""

from __future__ import annotations

import json
import re
from collections import deque

import attrs

MAX_COUNT = 2**53 - 1
"""Largest token count accepted (beyond it a count is ignored); exact in a float metric."""

MAX_LINE_BYTES = 1024 * 1024
"""Event stream lines longer than this (bytes before the ``\\n``) are dropped unread."""

_INPUT_FIELDS = ("input_tokens", "prompt_tokens")
_OUTPUT_FIELDS = ("output_tokens", "completion_tokens")
# A usage *object*, not ``"usage": null``; an escaped key (``"\u0075sage"``) is not recognised.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


@attrs.frozen
class Usage:
    """Token counts of one response (or a sum of several)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )


# A usage object as read: (input, output), each None when absent or invalid; never (None, None).
_Counts = tuple[int | None, int | None]


def _count(usage: dict[object, object], fields: tuple[str, str]) -> int | None:
    for field in fields:
        value = usage.get(field)
        if type(value) is int and 0 <= value <= MAX_COUNT:
            return value
    return None


def _counts_of(usage: object) -> _Counts | None:
    if not isinstance(usage, dict):
        return None
    counts = (_count(usage, _INPUT_FIELDS), _count(usage, _OUTPUT_FIELDS))
    return None if counts == (None, None) else counts


def _find_counts(payload: object) -> _Counts | None:
    """Breadth first (a top-level ``usage`` beats a nested one) and iterative (no recursion limit
    on deep JSON); a ``usage`` key without a recognised count does not stop the search."""
    queue: deque[object] = deque((payload,))
    while queue:
        value = queue.popleft()
        if isinstance(value, dict):
            counts = _counts_of(value.get("usage"))
            if counts is not None:
                return counts
            queue.extend(v for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            queue.extend(v for v in value if isinstance(v, dict | list))
    return None


def _usage(counts: _Counts | None) -> Usage | None:
    if counts is None:
        return None
    return Usage(counts[0] or 0, counts[1] or 0)


def find_usage(payload: object) -> Usage | None:
    """The first ``usage`` object found in a decoded JSON value (recursive search, dicts and lists).

    The search is breadth first, so the shallowest ``usage`` wins; a ``usage`` that is not an
    object or has no valid count is skipped. A missing count is 0 in the result.
    """
    return _usage(_find_counts(payload))


def _loads(data: bytes | bytearray) -> object:
    """Decoded JSON, or None for anything that is not (bad UTF-8, too deep, too many digits)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _line_counts(line: bytes) -> _Counts | None:
    """The usage counts of one event stream line, or None."""
    if b"usage" not in line or not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]" or not _USAGE_OBJECT.search(data):
        return None
    return _find_counts(_loads(data))


class UsageMeter:
    """Feed response body chunks as they pass; read .usage at the end."""

    def __init__(self, *, event_stream: bool, max_json_bytes: int = 8 * 1024 * 1024) -> None:
        self._event_stream = event_stream
        self._max_json_bytes = max_json_bytes
        # Plain body: the bytes so far, until they exceed max_json_bytes (then _gave_up).
        self._body = bytearray()
        self._gave_up = False
        self._parsed = False
        self._body_usage: Usage | None = None
        # Event stream: the unterminated line so far, or _skipping the rest of an overlong one.
        self._pending = bytearray()
        self._skipping = False
        self._input: int | None = None
        self._output: int | None = None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._event_stream:
            self._feed_stream(chunk)
        elif not self._gave_up:
            self._parsed = False
            if len(self._body) + len(chunk) > self._max_json_bytes:
                self._gave_up = True
                self._body = bytearray()
            else:
                self._body += chunk

    @property
    def usage(self) -> Usage | None:
        """The usage reported so far; None when the response carried no usage at all."""
        if not self._event_stream:
            if not self._parsed:
                self._body_usage = self._parse_body()
                self._parsed = True
            return self._body_usage
        input_tokens, output_tokens = self._input, self._output
        if self._pending and not self._skipping:
            # A last line without a terminator: counted, but not committed (more may follow).
            tail = _line_counts(bytes(self._pending))
            if tail is not None:
                input_tokens = input_tokens if tail[0] is None else tail[0]
                output_tokens = output_tokens if tail[1] is None else tail[1]
        if input_tokens is None and output_tokens is None:
            return None
        return Usage(input_tokens or 0, output_tokens or 0)

    def _parse_body(self) -> Usage | None:
        if self._gave_up or not _USAGE_OBJECT.search(self._body):
            return None
        return find_usage(_loads(self._body))

    def _feed_stream(self, chunk: bytes) -> None:
        first = chunk.find(b"\n")
        if first < 0:
            self._extend_pending(chunk)
            return
        self._end_line(chunk[:first])
        last = chunk.rfind(b"\n")
        # The complete lines strictly inside the chunk matter only if one mentions usage.
        if last > first and chunk.find(b"usage", first + 1, last) >= 0:
            for line in chunk[first + 1 : last].split(b"\n"):
                if len(line) <= MAX_LINE_BYTES:
                    self._take(line)
        self._extend_pending(chunk[last + 1 :])

    def _end_line(self, end: bytes) -> None:
        """A line terminator arrived after ``end``: finish the pending line."""
        if self._skipping:
            self._skipping = False
        elif self._pending:
            if len(self._pending) + len(end) <= MAX_LINE_BYTES:
                self._pending += end
                self._take(bytes(self._pending))
            self._pending.clear()
        elif len(end) <= MAX_LINE_BYTES:
            self._take(end)

    def _extend_pending(self, tail: bytes) -> None:
        if self._skipping or not tail:
            return
        if len(self._pending) + len(tail) > MAX_LINE_BYTES:
            self._pending.clear()
            self._skipping = True
        else:
            self._pending += tail

    def _take(self, line: bytes) -> None:
        counts = _line_counts(line)
        if counts is not None:
            if counts[0] is not None:
                self._input = counts[0]
            if counts[1] is not None:
                self._output = counts[1]
