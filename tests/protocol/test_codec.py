"""The wire codec: exact layout, round trips and strict rejection of malformed messages."""

from __future__ import annotations

import json
import struct
import typing
from typing import Any

import pytest

from nfrx.protocol import (
    Credit,
    Data,
    Drain,
    Frame,
    Goodbye,
    Hello,
    Load,
    LocalProtocolError,
    Members,
    Open,
    Ping,
    Pong,
    Refuse,
    RemoteProtocolError,
    Reset,
    ResetCode,
    Response,
    Status,
    Welcome,
    codec,
    decode,
    encode,
)
from nfrx.protocol.frames import MAX_STREAM_ID, MAX_WINDOW

from .helpers import make_hello, make_open, make_welcome

SAMPLES: list[Frame] = [
    make_hello(
        models=("a", "ünïcödé"),
        max_concurrency=0,
        status="busy",
        embedding_batch_size=32,
        window=MAX_WINDOW,
    ),
    make_welcome(heartbeat_interval=0.25, dead_after=1e-3, window=1),
    make_welcome(instance_id="b", members=(("a", "ws://10.0.0.1:8081"), ("b", "wss://b:443"))),
    Refuse(code="version", message='unsupported "version" 7'),
    Status(models=(), max_concurrency=8, status="draining", embedding_batch_size=2),
    Load(elsewhere=3),
    Members(members=(("a", "ws://10.0.0.1:8081"),)),
    Members(members=()),
    make_open(MAX_STREAM_ID, headers=(("x", "1"), ("x", "2")), timeout=12.5, end=True),
    Open(stream_id=1, method="GET", path="/"),
    Open(stream_id=2, method="GET", path="/v1/status/poll/t", slot=False),
    Response(stream_id=7, status=599, headers=(("content-type", "text/event-stream"),)),
    Response(stream_id=8, status=100, end=True),
    Data(stream_id=3, payload=b"\x00\xffbinary\r\n", end=False),
    Data(stream_id=MAX_STREAM_ID, payload=b"", end=True),
    Credit(stream_id=3, increment=MAX_WINDOW),
    Reset(stream_id=3, code=ResetCode.UPSTREAM_UNREACHABLE, message="connection refused"),
    Reset(stream_id=4, code="some-future-code"),
    Ping(nonce=-(2**70)),
    Pong(nonce=2**70),
    Drain(reason="restart", deadline=30.0),
    Drain(),
    Goodbye(reason="bye"),
]


def test_samples_cover_every_frame_type() -> None:
    assert {type(f) for f in SAMPLES} == set(typing.get_args(Frame))


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: type(f).__name__)
def test_round_trip(frame: Frame) -> None:
    message = encode(frame)
    if isinstance(frame, Data):
        assert isinstance(message, bytes)
    else:
        assert isinstance(message, str)
        assert json.loads(message)["type"] == frame.type
    decoded = decode(message)
    assert decoded == frame
    assert type(decoded) is type(frame)


def test_data_exact_bytes() -> None:
    assert encode(Data(stream_id=0x01020304, payload=b"hi", end=True)) == (
        b"\x01\x01\x01\x02\x03\x04hi"
    )
    assert encode(Data(stream_id=5, payload=b"xyz")) == b"\x01\x00\x00\x00\x00\x05xyz"
    assert encode(Data(stream_id=MAX_STREAM_ID, end=True)) == b"\x01\x01\xff\xff\xff\xff"
    assert codec.encode_data(5, b"xyz", end=True) == b"\x01\x01\x00\x00\x00\x05xyz"


def test_data_decode_from_exact_bytes() -> None:
    message = struct.pack(">BBI", 0x01, 0x01, 258) + b"body"
    assert decode(message) == Data(stream_id=258, payload=b"body", end=True)
    assert decode(b"\x01\x00\x00\x00\x00\x01") == Data(stream_id=1, payload=b"", end=False)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decode_accepts_bytes_like(wrap: Any) -> None:
    assert decode(wrap(b"\x01\x00\x00\x00\x00\x09ab")) == Data(stream_id=9, payload=b"ab")


def test_control_frame_json_layout() -> None:
    """Control frames are one JSON object carrying every field, None included."""
    obj = json.loads(encode(Open(stream_id=2, method="GET", path="/x")))
    assert obj == {
        "type": "open",
        "stream_id": 2,
        "method": "GET",
        "path": "/x",
        "headers": [],
        "timeout": None,
        "end": False,
        "slot": True,
    }


@pytest.mark.parametrize("stream_id", [0, -1, MAX_STREAM_ID + 1])
def test_encode_data_rejects_stream_id_out_of_range(stream_id: int) -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode_data(stream_id, b"x")
    with pytest.raises(LocalProtocolError):
        encode(Data(stream_id=stream_id, payload=b"x"))


# -- strictness --------------------------------------------------------------------------------


def _patched(frame: Frame, **changes: Any) -> str:
    """``frame`` as JSON with some fields replaced by raw JSON-compatible values."""
    obj = json.loads(encode(frame))
    obj.update(changes)
    return json.dumps(obj)


def _patched_raw(frame: Frame, key: str, literal: str) -> str:
    """``frame`` as JSON with the value of ``key`` replaced by the raw JSON text ``literal``."""
    placeholder = "\x00placeholder\x00"
    text = _patched(frame, **{key: placeholder})
    return text.replace(json.dumps(placeholder), literal)


def _without(frame: Frame, key: str) -> str:
    obj = json.loads(encode(frame))
    del obj[key]
    return json.dumps(obj)


OPEN = make_open(1)
HELLO = make_hello()
WELCOME = make_welcome()
STATUS = Status(models=("m",), max_concurrency=1, status="ready")
RESPONSE = Response(stream_id=1, status=200)
CREDIT = Credit(stream_id=1, increment=10)
RESET = Reset(stream_id=1, code="cancelled")
DRAIN = Drain(deadline=5.0)

INVALID_TEXT: dict[str, str] = {
    # JSON types must match exactly: no "5" for 5, no true for 1, no 1 for true, no 1.0 for 1
    "string-for-int": _patched(OPEN, stream_id="5"),
    "true-for-int": _patched(OPEN, stream_id=True),
    "float-for-int": _patched(Ping(nonce=1), nonce=1.0),
    "true-for-int-status": _patched(RESPONSE, status=True),
    "string-for-status": _patched(RESPONSE, status="200"),
    "int-for-bool": _patched(OPEN, end=1),
    "string-for-bool": _patched(OPEN, end="true"),
    "int-for-str": _patched(OPEN, method=5),
    "null-for-str": _patched(OPEN, path=None),
    "string-for-float": _patched(WELCOME, heartbeat_interval="10"),
    "bool-for-float": _patched(WELCOME, dead_after=True),
    "null-for-required-float": _patched(WELCOME, dead_after=None),
    "int-in-models": _patched(STATUS, models=[1]),
    "null-for-models": _patched(STATUS, models=None),
    "header-too-short": _patched(OPEN, headers=[["a"]]),
    "header-too-long": _patched(OPEN, headers=[["a", "b", "c"]]),
    "header-not-strings": _patched(OPEN, headers=[[1, 2]]),
    "missing-required-field": _without(OPEN, "path"),
    "missing-stream-id": _without(CREDIT, "stream_id"),
    # the frame type
    "unknown-type": json.dumps({"type": "nope"}),
    "missing-type": _without(Ping(nonce=1), "type"),
    "int-type": json.dumps({"type": 5, "nonce": 1}),
    "null-type": json.dumps({"type": None, "nonce": 1}),
    "list-type": json.dumps({"type": ["ping"], "nonce": 1}),
    "data-as-text": json.dumps({"type": "data", "stream_id": 1, "payload": "", "end": False}),
    "type-wrong-case": json.dumps({"type": "PING", "nonce": 1}),
    # not a JSON object
    "json-array": "[]",
    "json-string": '"ping"',
    "json-number": "5",
    "json-null": "null",
    "json-true": "true",
    "array-of-frame": json.dumps([{"type": "ping", "nonce": 1}]),
    # not JSON
    "empty": "",
    "truncated": '{"type": "ping", "nonce": 1',
    "garbage": "hello world",
    "single-quotes": "{'type': 'ping', 'nonce': 1}",
    "trailing-garbage": '{"type": "ping", "nonce": 1} x',
    "deeply-nested": "[" * 100_000,
    "huge-int-literal": '{"type": "ping", "nonce": ' + "9" * 5000 + "}",
    # stream ids
    "stream-id-0": _patched(OPEN, stream_id=0),
    "stream-id-negative": _patched(RESPONSE, stream_id=-1),
    "stream-id-too-big": _patched(CREDIT, stream_id=MAX_STREAM_ID + 1),
    "reset-stream-id-0": _patched(RESET, stream_id=0),
    # credit increments
    "credit-0": _patched(CREDIT, increment=0),
    "credit-negative": _patched(CREDIT, increment=-1),
    "credit-too-big": _patched(CREDIT, increment=MAX_WINDOW + 1),
    # windows
    "hello-window-0": _patched(HELLO, window=0),
    "welcome-window-negative": _patched(WELCOME, window=-5),
    "welcome-window-too-big": _patched(WELCOME, window=MAX_WINDOW + 1),
    # HTTP status
    "status-99": _patched(RESPONSE, status=99),
    "status-600": _patched(RESPONSE, status=600),
    "status-negative": _patched(RESPONSE, status=-200),
    # counts
    "hello-max-concurrency-negative": _patched(HELLO, max_concurrency=-1),
    "status-max-concurrency-negative": _patched(STATUS, max_concurrency=-1),
    "hello-batch-negative": _patched(HELLO, embedding_batch_size=-1),
    "status-batch-negative": _patched(STATUS, embedding_batch_size=-3),
    # non-finite floats (Python's json accepts these tokens, the codec must not)
    "nan-heartbeat": _patched(WELCOME, heartbeat_interval=float("nan")),
    "inf-dead-after": _patched(WELCOME, dead_after=float("inf")),
    "minus-inf-timeout": _patched(OPEN, timeout=float("-inf")),
    "nan-deadline": _patched(DRAIN, deadline=float("nan")),
    "overflowing-float-literal": _patched_raw(OPEN, "timeout", "1e400"),
    "negative-overflowing-float-literal": _patched_raw(WELCOME, "dead_after", "-1e400"),
}


def test_invalid_text_fixtures_are_really_text() -> None:
    assert all(isinstance(m, str) for m in INVALID_TEXT.values())
    assert "NaN" in INVALID_TEXT["nan-heartbeat"]
    assert "1e400" in INVALID_TEXT["overflowing-float-literal"]


@pytest.mark.parametrize("message", INVALID_TEXT.values(), ids=INVALID_TEXT.keys())
def test_invalid_text_is_rejected(message: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(message)


INVALID_BINARY: dict[str, bytes] = {
    "empty": b"",
    "one-byte": b"\x01",
    "five-bytes": b"\x01\x00\x00\x00\x00",
    "kind-0": b"\x00\x00\x00\x00\x00\x01x",
    "kind-2": b"\x02\x00\x00\x00\x00\x01x",
    "kind-ff": b"\xff\x00\x00\x00\x00\x01x",
    "flag-bit-1": b"\x01\x02\x00\x00\x00\x01x",
    "flag-end-plus-unknown": b"\x01\x03\x00\x00\x00\x01x",
    "flag-high-bit": b"\x01\x80\x00\x00\x00\x01x",
    "stream-id-0": b"\x01\x00\x00\x00\x00\x00x",
    "stream-id-0-end": b"\x01\x01\x00\x00\x00\x00",
    "json-as-binary": b'{"type":"ping","nonce":1}',
}


@pytest.mark.parametrize("message", INVALID_BINARY.values(), ids=INVALID_BINARY.keys())
def test_invalid_binary_is_rejected(message: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(message)


@pytest.mark.parametrize("message", [None, 5, 1.5, ["x"], {"type": "ping", "nonce": 1}])
def test_non_message_is_rejected(message: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(message)


# -- documented leniencies -------------------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    """Extra keys are tolerated so newer peers can add optional fields."""
    assert decode(_patched(Ping(nonce=4), future_field={"x": [1, 2]})) == Ping(nonce=4)


def test_defaults_fill_missing_optional_fields() -> None:
    assert decode('{"type":"open","stream_id":3,"method":"GET","path":"/"}') == Open(
        stream_id=3, method="GET", path="/"
    )
    assert decode('{"type":"goodbye"}') == Goodbye()


def test_integer_accepted_for_float_field() -> None:
    frame = decode(_patched(WELCOME, heartbeat_interval=5))
    assert isinstance(frame, Welcome)
    assert frame.heartbeat_interval == 5.0
    assert type(frame.heartbeat_interval) is float


def test_text_version_of_frames_may_contain_non_ascii() -> None:
    frame = Refuse(code="x", message="日本語 \u2028 \x00")
    message = encode(frame)
    assert isinstance(message, str)
    assert "日本語" in message
    assert decode(message) == frame


def test_range_limits_are_inclusive() -> None:
    assert decode(_patched(CREDIT, increment=MAX_WINDOW)) == Credit(
        stream_id=1, increment=MAX_WINDOW
    )
    assert decode(_patched(CREDIT, stream_id=MAX_STREAM_ID, increment=1)) == Credit(
        stream_id=MAX_STREAM_ID, increment=1
    )
    assert decode(_patched(RESPONSE, status=100)) == Response(stream_id=1, status=100)
    assert decode(_patched(RESPONSE, status=599)) == Response(stream_id=1, status=599)
    assert isinstance(decode(_patched(HELLO, max_concurrency=0, window=1)), Hello)


# -- regressions: bugs the property tests found, fixed -------------------------------------

HUGE_INT = "1" + "0" * 400  # valid JSON integer, parses to an int, too large for a float


@pytest.mark.parametrize(
    "message",
    [
        _patched_raw(OPEN, "timeout", HUGE_INT),
        _patched_raw(WELCOME, "heartbeat_interval", HUGE_INT),
        _patched_raw(DRAIN, "deadline", "-" + HUGE_INT),
    ],
    ids=["open-timeout", "welcome-heartbeat", "drain-deadline"],
)
def test_regression_huge_integer_in_float_field(message: str) -> None:
    assert HUGE_INT in message
    assert json.loads(message)  # well-formed JSON: only the codec's handling is wrong
    with pytest.raises(RemoteProtocolError):
        decode(message)


@pytest.mark.parametrize(
    "message",
    [
        _patched(STATUS, models="abc"),
        _patched(STATUS, models={"a": 1}),
        _patched(OPEN, headers=["ab"]),
        _patched(OPEN, headers={"ab": "x"}),
    ],
    ids=["string-for-models", "object-for-models", "string-for-header", "object-for-headers"],
)
def test_regression_non_array_accepted_for_sequence(message: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(message)


# -- batches -----------------------------------------------------------------------------------


def test_batch_layout_and_round_trip() -> None:
    text = encode(Credit(stream_id=3, increment=10))
    data = encode(Data(stream_id=3, payload=b"xy", end=True))
    assert isinstance(text, str)
    assert isinstance(data, bytes)
    batch = codec.encode_batch([text, data])
    raw = text.encode()
    assert batch == (
        b"\x02" + struct.pack(">BI", 0, len(raw)) + raw + struct.pack(">BI", 1, len(data)) + data
    )
    assert codec.is_batch(batch)
    assert not codec.is_batch(data)
    assert not codec.is_batch(text)
    assert codec.split_batch(batch) == [text, data]
    # A batch is not one frame: decode() refuses it.
    with pytest.raises(RemoteProtocolError):
        decode(batch)


def test_empty_batch_is_not_sent() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode_batch([])


@pytest.mark.parametrize(
    "message",
    [
        b"\x02",  # no item
        b"\x02\x00\x00\x00",  # item header cut short
        b"\x02\x00\x00\x00\x00\x05abc",  # item runs past the message
        b"\x02\x07\x00\x00\x00\x01x",  # unknown item tag
        b"\x02\x00\x00\x00\x00\x02\xff\xfe",  # text item that is not UTF-8
        b"\x02\x01\x00\x00\x00\x02\x02\x00",  # a batch inside a batch
    ],
)
def test_malformed_batches_are_rejected(message: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.split_batch(message)
