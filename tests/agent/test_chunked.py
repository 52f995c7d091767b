"""The chunked body decoder, synchronously: any split of the input, and h11's strictness."""

from __future__ import annotations

import h11
import pytest

from nfrx.agent.chunked import MAX_LINE_BYTES, ChunkedDecoder, ChunkedError


def encode(*chunks: bytes) -> bytes:
    """A chunked body as h11 writes it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    conn.next_event()
    conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    body = [conn.send(h11.Data(data=chunk)) or b"" for chunk in chunks]
    return b"".join(body) + (conn.send(h11.EndOfMessage()) or b"")


CHUNKS = [b"data: one\n\n", b"x" * 300, b"data: three\n\n"]
BODY = encode(*CHUNKS)


def test_everything_at_once_is_one_piece() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(BODY) == b"".join(CHUNKS)
    assert decoder.done
    assert decoder.leftover == b""


@pytest.mark.parametrize("at", range(1, len(BODY)))
def test_any_split_gives_the_same_bytes(at: int) -> None:
    decoder = ChunkedDecoder()
    out = decoder.feed(BODY[:at])
    assert not decoder.done
    out += decoder.feed(BODY[at:])
    assert out == b"".join(CHUNKS)
    assert decoder.done


def test_byte_by_byte_data_comes_out_as_it_arrives() -> None:
    decoder = ChunkedDecoder()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    out = [decoder.feed(body[i : i + 1]) for i in range(len(body))]
    assert out[3:8] == [b"h", b"e", b"l", b"l", b"o"]  # nothing of the data is held back
    assert b"".join(out) == b"hello"
    assert decoder.done


def test_extensions_and_trailers_are_skipped_and_leftover_is_kept() -> None:
    decoder = ChunkedDecoder()
    body = b"5 ;name=value\r\nhello\r\nA\r\n0123456789\r\n0;last\r\nx-checksum: 1\r\n\r\nEXTRA"
    assert decoder.feed(body) == b"hello0123456789"
    assert decoder.done
    assert decoder.leftover == b"EXTRA"
    assert decoder.feed(b"MORE") == b""
    assert decoder.leftover == b"EXTRAMORE"


@pytest.mark.parametrize(
    "body",
    [
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"zz\r\nhello\r\n",  # not a hex size
        b"\r\n",  # no size at all
        b"12345678901234567\r\n",  # 17 hex digits
        b"-5\r\nhello\r\n",
        b"5\nhello\r\n0\r\n\r\n",  # a bare LF does not end the size line
    ],
)
def test_invalid_framing_is_refused(body: bytes) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(ChunkedError):
        decoder.feed(body)


def test_a_size_line_that_never_ends_is_refused() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"5" * MAX_LINE_BYTES)
    with pytest.raises(ChunkedError):
        decoder.feed(b"5")


def test_endless_trailers_are_refused() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"0\r\n")
    trailers = (b"x-pad: " + b"y" * 1000 + b"\r\n") * 100
    with pytest.raises(ChunkedError):
        decoder.feed(trailers)
