"""The codec's limits: what one message from a peer can make the receiver do is bounded."""

from __future__ import annotations

import json

import attrs
import pytest

from nfrx.protocol import (
    LocalProtocolError,
    Ping,
    RemoteProtocolError,
    Role,
    Status,
    codec,
    decode,
    encode,
)
from nfrx.protocol.frames import CONTROL_FRAMES

from .helpers import ConnectionPair

FULL = codec.MAX_BATCH_FRAMES


def padded(obj: dict[str, object], size: int) -> str:
    """``obj`` as JSON of exactly ``size`` characters (an unknown key carries the padding)."""
    bare = json.dumps({**obj, "pad": ""}, separators=(",", ":"))
    return json.dumps({**obj, "pad": "x" * (size - len(bare))}, separators=(",", ":"))


def test_every_control_frame_type_has_a_size_limit() -> None:
    names = {str(attrs.fields(cls).type.default) for cls in CONTROL_FRAMES}
    assert set(codec.MAX_CONTROL_CHARS) == names


def test_a_full_batch_is_accepted() -> None:
    pair = ConnectionPair()
    pair.handshake()
    pings = [encode(Ping(nonce=i)) for i in range(FULL)]
    events = pair.deliver(Role.SERVER, codec.encode_batch(pings))
    assert events == [Ping(nonce=i) for i in range(FULL)]


def test_a_batch_over_the_cap_is_refused_before_any_frame_counts() -> None:
    pair = ConnectionPair()
    pair.handshake()
    one = json.dumps({"type": "ping", "nonce": 1}).encode()
    item = b"\x00" + len(one).to_bytes(4, "big") + one
    for count in (FULL + 1, 200_000):
        with pytest.raises(RemoteProtocolError, match=f"^a batch of more than {FULL} messages$"):
            pair.server.receive(b"\x02" + item * count)
        assert pair.server.events() == []


def test_a_sender_never_packs_more_than_the_cap() -> None:
    with pytest.raises(LocalProtocolError):
        codec.encode_batch([encode(Ping(nonce=1))] * (FULL + 1))


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("ping", {"nonce": 1}),
        ("pong", {"nonce": 1}),
        ("credit", {"stream_id": 1, "increment": 1}),
        ("reset", {"stream_id": 1, "code": "cancelled"}),
        ("goodbye", {}),
        ("response", {"stream_id": 1, "status": 200}),
        ("status", {"models": [], "max_concurrency": 1, "status": "ready"}),
    ],
)
def test_control_frames_over_their_size_are_refused(name: str, fields: dict[str, object]) -> None:
    limit = codec.MAX_CONTROL_CHARS[name]
    at_limit = padded({"type": name, **fields}, limit)
    assert decode(at_limit).type == name
    # The largest kinds meet the check made before parsing ("control frame of ...").
    message = rf"frame of {limit + 1} characters \(at most {limit}\)$"
    with pytest.raises(RemoteProtocolError, match=message):
        decode(padded({"type": name, **fields}, limit + 1))


def test_oversized_text_is_refused_before_it_is_parsed() -> None:
    biggest = max(codec.MAX_CONTROL_CHARS.values())
    with pytest.raises(RemoteProtocolError, match=r"^control frame of \d+ characters"):
        decode("[" * (biggest + 1))  # parsed, it would be a RecursionError, then "not JSON"


def test_a_status_within_the_frame_limit_decodes() -> None:
    status = Status(models=tuple(f"model-{i}" for i in range(1000)), max_concurrency=1, status="x")
    assert decode(encode(status)) == status


def test_errors_do_not_echo_what_the_peer_sent() -> None:
    with pytest.raises(RemoteProtocolError) as raised:
        decode(json.dumps({"type": "x" * 100_000}))
    assert len(str(raised.value)) < 100
