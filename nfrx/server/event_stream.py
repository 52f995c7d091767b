"""Relaying a ``text/event-stream`` at event boundaries (pure: no I/O).

A backend's chunks need not end where its events end. Passed on as they come, a stream that
breaks mid-event leaves the client holding half an event, and the relay's final ``error`` event
was glued onto it (``data: {"par`` + ``event: error`` ...: one garbled event). :class:`EventCutter`
lets out only whole events -- everything up to the last blank line seen -- and holds back the
incomplete tail until its end arrives, so on failure the tail is dropped and the error event is a
clean event of its own.

Nothing is delayed that is complete: a chunk holding whole events goes out at once, unchanged
(the common case costs one ``endswith``); bytes are never split inside an event, reordered or
rewritten. A tail that grows past :data:`HOLD_LIMIT` (a stream that does not follow the format, or
one giant event) is let out anyway, so that it is never held indefinitely; until the next event
boundary :attr:`EventCutter.mid_event` then says the client is inside an event, and an error
event must start with a blank line.
"""

from __future__ import annotations

from typing import Final

HOLD_LIMIT: Final = 64 * 1024
"""Most bytes of an incomplete event held back before they are let out regardless."""

_TERMINATORS: Final = (b"\n\n", b"\r\n\r\n", b"\r\r")
"""What ends an event: an empty line after LF, CRLF or CR line ends."""


class EventCutter:
    """Cuts one event stream into the parts that may go out now (see the module docstring)."""

    def __init__(self, limit: int = HOLD_LIMIT) -> None:
        self.limit = limit
        self._held = b""
        self.mid_event = False
        """True when the bytes let out so far end inside an event."""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (after what was held) that end at an event boundary; the rest
        is held. Returns ``b""`` when nothing may go out yet."""
        held = self._held
        if not held and chunk.endswith(_TERMINATORS):
            self.mid_event = False
            return chunk
        data = held + chunk if held else chunk
        start = max(len(held) - 3, 0)  # a terminator may straddle the held bytes and the chunk
        end = max(
            (at + len(t) for t in _TERMINATORS if (at := data.rfind(t, start)) >= 0), default=0
        )
        out, self._held = data[:end], data[end:]
        if out:
            self.mid_event = False
        if len(self._held) > self.limit:
            out, self._held = data, b""
            self.mid_event = True
        return out

    def rest(self) -> bytes:
        """What is held back, taken: the last bytes of a stream that ended cleanly (a final
        event the backend did not terminate is still the backend's to send)."""
        held, self._held = self._held, b""
        return held

    def drop(self) -> int:
        """Forget what is held back (the stream failed); returns how many bytes that was."""
        dropped, self._held = len(self._held), b""
        return dropped
