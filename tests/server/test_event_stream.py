"""EventCutter: an event stream relayed in whole events, never split, reordered or delayed."""

from __future__ import annotations

import random

import pytest

from nfrx.server.event_stream import EventCutter

EVENTS = [
    b'data: {"a": 1}\n\n',
    b"event: delta\ndata: x\n\n",
    b": comment\r\n\r\n",
    b"data: crlf\r\ndata: two lines\r\n\r\n",
    b"data: cr only\r\r",
    b"id: 7\nretry: 100\ndata: {}\n\n",
]


def test_whole_events_go_out_at_once_unchanged() -> None:
    cutter = EventCutter()
    for event in EVENTS:
        assert cutter.feed(event) == event
    two = EVENTS[0] + EVENTS[1]
    assert cutter.feed(two) is two  # the common case: not even copied
    assert not cutter.mid_event


def test_an_incomplete_event_is_held_until_its_end() -> None:
    cutter = EventCutter()
    assert cutter.feed(b'data: {"par') == b""
    assert cutter.feed(b'tial": 1}\n') == b""
    assert cutter.feed(b"\ndata: next") == b'data: {"partial": 1}\n\n'
    assert cutter.feed(b"\n\n") == b"data: next\n\n"
    assert cutter.rest() == b""


def test_a_crlf_terminator_split_across_chunks() -> None:
    cutter = EventCutter()
    assert cutter.feed(b"data: x\r\n\r") == b""
    assert cutter.feed(b"\n") == b"data: x\r\n\r\n"


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_gives_the_same_bytes_in_whole_events(seed: int) -> None:
    rng = random.Random(seed)
    stream = b"".join(rng.choice(EVENTS) for _ in range(30))
    cutter = EventCutter()
    out: list[bytes] = []
    position = 0
    while position < len(stream):
        size = rng.randint(1, 40)
        part = cutter.feed(stream[position : position + size])
        position += size
        if part:
            assert part.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")), part
            out.append(part)
    assert b"".join(out) + cutter.rest() == stream
    assert cutter.rest() == b""


def test_the_end_of_a_stream_lets_out_an_unterminated_last_event() -> None:
    cutter = EventCutter()
    assert cutter.feed(b"data: 1\n\ndata: [DONE]") == b"data: 1\n\n"
    assert cutter.rest() == b"data: [DONE]"


def test_a_tail_past_the_limit_is_let_out_anyway() -> None:
    cutter = EventCutter(limit=10)
    assert cutter.feed(b"data: 12345") == b"data: 12345"
    assert cutter.mid_event
    assert cutter.feed(b"678") == b""
    assert cutter.mid_event
    assert cutter.feed(b"\n\ndata: x") == b"678\n\n"
    assert not cutter.mid_event
    assert cutter.drop() == len(b"data: x")
    assert cutter.rest() == b""
