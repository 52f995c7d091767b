"""The MCP wire helpers: message reading, header allow-lists, eras, relay errors, SSE splitting."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfrx.plugins.mcp import wire


def test_era_follows_the_protocol_version_header() -> None:
    assert wire.era_of(None) == wire.LEGACY
    assert wire.era_of("") == wire.LEGACY
    assert wire.era_of("2025-03-26") == wire.LEGACY
    assert wire.era_of("2025-11-25") == wire.LEGACY
    assert wire.era_of("2026-07-28") == wire.MODERN
    assert wire.era_of("2027-01-01") == wire.MODERN


def test_request_ids_keep_their_json_type() -> None:
    number = wire.parse_message(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    text = wire.parse_message(b'{"jsonrpc":"2.0","id":"1","method":"tools/list"}')
    assert (number.kind, number.id, number.method) == (wire.Kind.REQUEST, "1", "tools/list")
    assert text.id == '"1"'


def test_notifications_responses_and_what_routing_needs() -> None:
    note = wire.parse_message(
        b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"a7"}}'
    )
    assert (note.kind, note.cancelled_id) == (wire.Kind.NOTIFICATION, '"a7"')
    reply = wire.parse_message(b'{"jsonrpc":"2.0","id":5,"result":{}}')
    assert (reply.kind, reply.id) == (wire.Kind.RESPONSE, "5")
    call = wire.parse_message(
        json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 9,
                "method": "tools/call",
                "params": {
                    "name": "x",
                    "_meta": {
                        "progressToken": 3,
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    },
                },
            }
        ).encode()
    )
    assert (call.progress_token, call.protocol_version) == ("3", "2026-07-28")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "not JSON"),
        (b"[]", "batches"),
        (b'"x"', "not a JSON-RPC message"),
        (b'{"id":1,"method":"m"}', "jsonrpc"),
        (b'{"jsonrpc":"2.0","id":null,"method":"m"}', "string or an integer"),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"m"}', "string or an integer"),
        (b'{"jsonrpc":"2.0","id":true,"method":"m"}', "string or an integer"),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', "non-empty"),
        (b'{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}', "params"),
        (b'{"jsonrpc":"2.0","id":1}', "neither"),
    ],
)
def test_invalid_messages_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(wire.InvalidMessage, match=reason) as caught:
        wire.parse_message(body)
    # The JSON-RPC error it deserves travels with it (not read back from the text).
    expected = wire.PARSE_ERROR if body == b"{" else wire.INVALID_REQUEST
    assert caught.value.code == expected


def test_a_body_that_is_not_json_keeps_its_cause() -> None:
    with pytest.raises(wire.InvalidMessage) as caught:
        wire.parse_message(b"{")
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_header_allow_lists() -> None:
    sent = [
        ("Host", "evil"),
        ("Origin", "https://x"),
        ("Cookie", "a=b"),
        ("Authorization", "Bearer k"),
        ("Mcp-Session-Id", "s1"),
        ("MCP-Protocol-Version", "2025-11-25"),
        ("Mcp-Param-Region", "eu"),
        ("Accept", "application/json, text/event-stream"),
        ("X-Nfrx-Mcp-Era", "modern"),
    ]
    kept = wire.request_headers(sent, passthrough_auth=False)
    assert kept == [
        ("mcp-session-id", "s1"),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-param-region", "eu"),
        ("accept", "application/json, text/event-stream"),
    ]
    assert ("authorization", "Bearer k") in wire.request_headers(sent, passthrough_auth=True)
    back = wire.response_headers([("Set-Cookie", "a"), ("Mcp-Session-Id", "s"), ("Server", "x")])
    assert back == [("mcp-session-id", "s")]


def test_relay_errors_splice_the_id_verbatim() -> None:
    body = wire.relay_error('"a"', wire.RelayCode.TIMEOUT, "late", retryable=True, req_id="r1")
    assert json.loads(body) == {
        "jsonrpc": "2.0",
        "id": "a",
        "error": {
            "code": -32603,
            "message": "nfrx: late",
            "data": {"nfrx": {"code": "MCP_TIMEOUT", "retryable": True, "req_id": "r1"}},
        },
    }
    assert json.loads(wire.jsonrpc_error(None, -32600, "bad"))["id"] is None


STREAM = (
    b'event: message\r\ndata: {"a":1}\r\n\r\n'
    b": keepalive\r\n\r\n"
    b"id: 7\ndata: line1\ndata: line2\n\n"
    b"retry: 100\n\n"
)


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=8))
def test_sse_events_do_not_depend_on_chunking(cuts: list[int]) -> None:
    parser = wire.SseParser(limit=1000)
    events: list[wire.SseEvent] = []
    start = 0
    for cut in sorted(set(cuts)):
        events += parser.feed(STREAM[start:cut])
        start = cut
    events += parser.feed(STREAM[start:])
    assert b"".join(e.raw for e in events) == STREAM
    assert [e.data for e in events] == [b'{"a":1}', b"", b"line1\nline2", b""]
    assert [e.is_message for e in events] == [True, False, True, False]
    assert events[2].id == "7"
    assert events[0].event == "message"
    assert parser.pending == b""


def test_an_oversized_sse_event_is_refused() -> None:
    parser = wire.SseParser(limit=10)
    with pytest.raises(wire.EventTooLarge):
        parser.feed(b"data: " + b"x" * 20)


def test_sse_message_is_one_event() -> None:
    (event,) = wire.SseParser(limit=100).feed(wire.sse_message(b'{"id":1}'))
    assert event.data == b'{"id":1}'
