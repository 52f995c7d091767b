"""The multipart field scanner and the upload's replay rules (no network)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from nfrx.server.http_errors import HttpError
from nfrx.server.upload import (
    SPOOL_MEMORY,
    FieldFinder,
    Upload,
    multipart_boundary,
    read_field,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def form(*parts: tuple[str, bytes], boundary: str = "XyZ") -> bytes:
    body = b"preamble\r\n"
    for name, value in parts:
        filename = '; filename="a.wav"' if name == "file" else ""
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'
            ).encode()
            + value
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


def scan(body: bytes, size: int, field: str = "model") -> str | None:
    finder = FieldFinder(b"XyZ", field)
    for i in range(0, len(body), size):
        value = finder.feed(body[i : i + size])
        if value is not None:
            return value
    return None


# A file part that contains look-alikes of the delimiter and of the field's header.
TRICKY = b'\r\n--XyZ-not\r\nname="model"\r\n\r\nfake' + bytes(range(256)) * 50


@pytest.mark.parametrize("size", [1, 2, 5, 13, 4096, 1 << 20])
def test_finds_the_field_after_a_file_in_any_chunking(size: int) -> None:
    body = form(("file", TRICKY), ("model", b"whisper-1"), ("stream", b"true"))
    assert scan(body, size) == "whisper-1"


def test_field_first_and_missing_field() -> None:
    assert scan(form(("model", b"m"), ("file", TRICKY)), 7) == "m"
    assert scan(form(("file", b"x"), ("language", b"en")), 3) is None


def test_oversized_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="longer than"):
        scan(form(("model", b"m" * 10_000)), 100)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a b"', b"a b"),
        ("application/json", None),
        ("multipart/form-data", None),
        (None, None),
    ],
)
def test_boundary(content_type: str | None, boundary: bytes | None) -> None:
    assert multipart_boundary(content_type) == boundary


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class _Sink:
    """Stands in for an OutgoingStream's sending side."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended = False

    async def send_data(self, payload: bytes) -> None:
        self.data += payload

    async def end(self) -> None:
        self.ended = True


async def test_spooled_prefix_is_replayed_then_the_rest_streamed() -> None:
    body = form(("file", TRICKY * 100), ("model", b"whisper-1")) + b"epilogue" * 1000
    upload = Upload(_chunks(body, 1000), limit=len(body))
    assert await read_field(upload, b"XyZ", "model") == "whisper-1"
    assert upload.replayable
    sink = _Sink()
    await upload.send(sink)  # type: ignore[arg-type]
    assert bytes(sink.data) == body
    assert sink.ended
    assert not upload.replayable  # bytes past the spool went out once
    upload.close()


async def test_fully_spooled_upload_stays_replayable() -> None:
    body = form(("file", b"x" * (2 * SPOOL_MEMORY)), ("language", b"en"))  # on disk by now
    upload = Upload(_chunks(body, 65536), limit=len(body))
    assert await read_field(upload, b"XyZ", "model") is None  # read to the end, all spooled
    assert upload.ended
    for _ in range(2):  # a retry sends the same bytes again
        sink = _Sink()
        await upload.send(sink)  # type: ignore[arg-type]
        assert bytes(sink.data) == body
        assert upload.replayable
    upload.close()


async def test_limit_counts_streamed_bytes() -> None:
    upload = Upload(_chunks(b"x" * 5000, 1000), limit=4500)
    with pytest.raises(HttpError) as caught:
        await upload.send(_Sink())  # type: ignore[arg-type]
    assert caught.value.status == 413


async def test_replay_renames_the_field() -> None:
    body = form(("file", TRICKY), ("model", b"short"), ("stream", b"true"))
    upload = Upload(_chunks(body, 7), limit=len(body))
    assert await read_field(upload, b"XyZ", "model") == "short"
    upload.replacement = b"a-much-longer-model:8b-q4_0"
    sink = _Sink()
    await upload.send(sink)  # type: ignore[arg-type]
    assert bytes(sink.data) == form(
        ("file", TRICKY), ("model", b"a-much-longer-model:8b-q4_0"), ("stream", b"true")
    )
    upload.close()
