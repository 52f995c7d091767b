"""Token usage metering over relayed response bodies, as tables and properties (no I/O)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfrx.server.usage import MAX_COUNT, MAX_LINE_BYTES, Usage, UsageMeter, find_usage


def sse(*events: tuple[str | None, object], crlf: bool = False) -> bytes:
    """An event stream: ``(event name or None, data)``; data that is not a str is JSON-encoded."""
    eol = "\r\n" if crlf else "\n"
    out: list[str] = []
    for name, data in events:
        if name is not None:
            out.append(f"event: {name}{eol}")
        text = data if isinstance(data, str) else json.dumps(data)
        out.append(f"data: {text}{eol}{eol}")
    return "".join(out).encode()


OPENAI_CHAT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

OPENAI_EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093, 0.0158]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

RESPONSES_BODY = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "status": "completed",
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "In a peaceful grove...", "annotations": []}
            ],
        }
    ],
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    },
}

ANTHROPIC_BODY = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 200,
    },
}

OPENAI_ERROR = {
    "error": {
        "message": "Incorrect API key provided: sk-****.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def _chat_chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> object:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


# stream_options.include_usage: every chunk says "usage": null, one last chunk carries it.
OPENAI_SSE_INCLUDE_USAGE = sse(
    (None, _chat_chunk({"role": "assistant", "content": ""}, usage=None)),
    (None, _chat_chunk({"content": "Hello"}, usage=None)),
    (None, _chat_chunk({"content": " usage!"}, usage=None)),
    (None, _chat_chunk({}, "stop", usage=None)),
    (
        None,
        {
            "id": "chatcmpl-123",
            "object": "chat.completion.chunk",
            "created": 1694268190,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
        },
    ),
    (None, "[DONE]"),
)

OPENAI_SSE_NO_USAGE = sse(
    (None, _chat_chunk({"role": "assistant", "content": ""})),
    (None, _chat_chunk({"content": "what is usage?"})),
    (None, _chat_chunk({}, "stop")),
    (None, "[DONE]"),
)

_RESPONSE_SHELL = {
    "id": "resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654",
    "object": "response",
    "created_at": 1741290958,
    "model": "gpt-4.1-2025-04-14",
    "output": [],
    "usage": None,
}

RESPONSES_SSE = sse(
    (
        "response.created",
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {**_RESPONSE_SHELL, "status": "in_progress"},
        },
    ),
    (
        "response.output_text.delta",
        {
            "type": "response.output_text.delta",
            "sequence_number": 4,
            "item_id": "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hi",
        },
    ),
    (
        "response.completed",
        {
            "type": "response.completed",
            "sequence_number": 9,
            "response": {
                **_RESPONSE_SHELL,
                "status": "completed",
                "output": [
                    {
                        "id": "msg_67c9fdcf37fc8190ba82116e33fb28c507b8b0ad4e5eb654",
                        "type": "message",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hi there!"}],
                    }
                ],
                "usage": {
                    "input_tokens": 37,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": 11,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": 48,
                },
            },
        },
    ),
)

ANTHROPIC_SSE = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-opus-4-1-20250805",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 25,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                },
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

# Some servers repeat cumulative usage in every chunk: the last one is the answer.
CUMULATIVE_SSE = sse(
    *[
        (None, _chat_chunk({"content": "x"}, usage={"prompt_tokens": 5, "completion_tokens": n}))
        for n in range(1, 8)
    ],
    (None, "[DONE]"),
)

ANTHROPIC_ERROR_SSE = sse(
    (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ),
)


def meter_of(body: bytes, *, event_stream: bool, chunks: int = 1) -> UsageMeter:
    meter = UsageMeter(event_stream=event_stream)
    size = max(1, -(-len(body) // chunks))
    for start in range(0, len(body), size):
        meter.feed(body[start : start + size])
    return meter


def bytewise(body: bytes, *, event_stream: bool) -> UsageMeter:
    meter = UsageMeter(event_stream=event_stream)
    for i in range(len(body)):
        meter.feed(body[i : i + 1])
    return meter


# --- Usage ----------------------------------------------------------------------------------


def test_usage_value() -> None:
    assert Usage() == Usage(0, 0)
    assert Usage(3, 4).total == 7
    assert Usage(3, 4) + Usage(10, 20) == Usage(13, 24)
    assert sum([Usage(1, 2), Usage(3, 4)], Usage()) == Usage(4, 6)
    with pytest.raises(TypeError):
        Usage(1, 2) + 3  # type: ignore[operator]
    with pytest.raises(AttributeError):
        Usage().input_tokens = 1  # type: ignore[misc]


# --- find_usage -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(OPENAI_CHAT, Usage(1117, 46), id="openai-chat"),
        pytest.param(OPENAI_EMBEDDINGS, Usage(8, 0), id="embeddings"),
        pytest.param(RESPONSES_BODY, Usage(36, 87), id="responses"),
        pytest.param(ANTHROPIC_BODY, Usage(2095, 503), id="anthropic"),
        pytest.param(OPENAI_ERROR, None, id="error"),
        pytest.param({"usage": None}, None, id="null"),
        pytest.param({"usage": {}}, None, id="empty"),
        pytest.param({"usage": [1, 2]}, None, id="list"),
        pytest.param({"usage": "12"}, None, id="str"),
        pytest.param({"usage": {"total_tokens": 12}}, None, id="total-only"),
        pytest.param({"usage": {"completion_tokens": 5}}, Usage(0, 5), id="output-only"),
        pytest.param(
            {"usage": {"input_tokens": 1, "prompt_tokens": 2, "output_tokens": 3}},
            Usage(1, 3),
            id="input-wins-over-prompt",
        ),
        pytest.param(
            {"usage": {"input_tokens": -1, "prompt_tokens": 2, "completion_tokens": 4}},
            Usage(2, 4),
            id="invalid-input-falls-back",
        ),
        pytest.param({"usage": {"prompt_tokens": True}}, None, id="bool"),
        pytest.param({"usage": {"prompt_tokens": -3}}, None, id="negative"),
        pytest.param({"usage": {"prompt_tokens": 3.0}}, None, id="float"),
        pytest.param({"usage": {"prompt_tokens": "3"}}, None, id="string-count"),
        pytest.param({"usage": {"prompt_tokens": MAX_COUNT + 1}}, None, id="huge"),
        pytest.param({"usage": {"prompt_tokens": MAX_COUNT}}, Usage(MAX_COUNT, 0), id="max"),
        pytest.param({"usage": {"prompt_tokens": 2, "completion_tokens": 10**30}}, Usage(2, 0)),
        pytest.param([{"a": 1}, {"usage": {"prompt_tokens": 4}}], Usage(4, 0), id="in-list"),
        pytest.param(
            {"response": {"usage": {"input_tokens": 7, "output_tokens": 8}}},
            Usage(7, 8),
            id="nested",
        ),
        pytest.param(
            {"a": {"b": {"usage": {"prompt_tokens": 1}}}, "usage": {"prompt_tokens": 2}},
            Usage(2, 0),
            id="shallowest-wins",
        ),
        pytest.param(
            {"usage": {"foo": 1}, "data": [{"usage": {"prompt_tokens": 6}}]},
            Usage(6, 0),
            id="skips-unrecognised",
        ),
        pytest.param(
            {"a": [{"usage": {"prompt_tokens": 1}}], "b": [{"usage": {"prompt_tokens": 2}}]},
            Usage(1, 0),
            id="document-order",
        ),
        pytest.param(None, None, id="none"),
        pytest.param(12, None, id="int"),
        pytest.param("usage", None, id="string"),
        pytest.param({1: "usage"}, None, id="non-str-key"),
    ],
)
def test_find_usage(payload: object, expected: Usage | None) -> None:
    assert find_usage(payload) == expected


def test_find_usage_deep_nesting_does_not_recurse() -> None:
    payload: object = {"usage": {"prompt_tokens": 3}}
    for _ in range(100_000):
        payload = [payload]
    assert find_usage(payload) == Usage(3, 0)


# --- plain bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(json.dumps(OPENAI_CHAT).encode(), Usage(1117, 46), id="openai-chat"),
        pytest.param(json.dumps(OPENAI_CHAT, indent=2).encode(), Usage(1117, 46), id="indented"),
        pytest.param(json.dumps(OPENAI_EMBEDDINGS).encode(), Usage(8, 0), id="embeddings"),
        pytest.param(json.dumps(RESPONSES_BODY).encode(), Usage(36, 87), id="responses"),
        pytest.param(json.dumps(ANTHROPIC_BODY).encode(), Usage(2095, 503), id="anthropic"),
        pytest.param(json.dumps({"id": "x", "choices": []}).encode(), None, id="no-usage"),
        pytest.param(json.dumps(OPENAI_ERROR).encode(), None, id="error"),
        pytest.param(b"Internal Server Error", None, id="text"),
        pytest.param(b"", None, id="empty"),
        pytest.param(json.dumps(OPENAI_CHAT).encode()[:-10], None, id="truncated"),
        pytest.param(b'{"usage": {"prompt_tokens": 1' + b"0" * 5000 + b"}}", None, id="digits"),
        pytest.param(b'{"usage": {"prompt_tokens": 1e400}}', None, id="inf"),
        pytest.param(b"[" * 100_000 + b'{"usage": {}}' + b"]" * 100_000, None, id="deep"),
        pytest.param(b'{"usage": {"prompt_tokens": 3}}\xff', None, id="bad-utf8"),
    ],
)
@pytest.mark.parametrize("chunks", [1, 7])
def test_plain_body(body: bytes, expected: Usage | None, chunks: int) -> None:
    meter = meter_of(body, event_stream=False, chunks=chunks)
    assert meter.usage == expected
    assert meter.usage == expected  # parsed once, read twice


def test_plain_body_gives_up_past_the_limit() -> None:
    body = json.dumps(OPENAI_CHAT).encode()
    meter = UsageMeter(event_stream=False, max_json_bytes=len(body))
    meter.feed(body)
    assert meter.usage == Usage(1117, 46)  # exactly at the limit still counts
    meter.feed(b" ")
    assert meter.usage is None
    meter.feed(b"more")
    assert meter.usage is None
    assert len(meter._body) == 0  # stopped buffering


def test_plain_body_reparses_after_more_bytes() -> None:
    body = json.dumps(OPENAI_CHAT).encode()
    meter = UsageMeter(event_stream=False)
    meter.feed(body[:100])
    assert meter.usage is None
    meter.feed(body[100:])
    assert meter.usage == Usage(1117, 46)


def test_plain_body_is_not_an_event_stream() -> None:
    assert meter_of(ANTHROPIC_SSE, event_stream=False).usage is None


# --- event streams --------------------------------------------------------------------------


STREAMS = [
    pytest.param(OPENAI_SSE_INCLUDE_USAGE, Usage(9, 12), id="openai-include-usage"),
    pytest.param(OPENAI_SSE_NO_USAGE, None, id="openai-no-usage"),
    pytest.param(RESPONSES_SSE, Usage(37, 11), id="responses"),
    pytest.param(ANTHROPIC_SSE, Usage(25, 15), id="anthropic"),
    pytest.param(CUMULATIVE_SSE, Usage(5, 7), id="cumulative"),
    pytest.param(ANTHROPIC_ERROR_SSE, None, id="error-event"),
    pytest.param(b"", None, id="empty"),
    pytest.param(b'{"usage": {"prompt_tokens": 3}}\n', None, id="not-data"),
    pytest.param(b'event: usage\n: "usage": {"prompt_tokens": 3}\n\n', None, id="comment"),
    pytest.param(b'data:{"usage":{"prompt_tokens":3}}\n\n', Usage(3, 0), id="no-space"),
    pytest.param(b'data: {"usage": {"prompt_tokens": 3}}', Usage(3, 0), id="unterminated"),
    pytest.param(b'data: {"usage": {"prompt_tokens": 3}\n\n', None, id="invalid-json"),
    pytest.param(b'data: {"usage": {"prompt_tokens": -3}}\n\n', None, id="negative"),
    pytest.param(b'data: {"usage": {"prompt_tokens": true}}\n\n', None, id="bool"),
    pytest.param(
        b'data: {"usage": {"prompt_tokens": 1' + b"0" * 5000 + b"}}\n\n", None, id="digits"
    ),
    pytest.param(
        b'data: {"usage": {"prompt_tokens": 4, "completion_tokens": 1}}\n\n'
        b'data: {"usage": {"prompt_tokens": "x", "completion_tokens": 9}}\n\n'
        b'data: {"usage": {"prompt_tokens": 4, "completion_tokens": -1}}\n\n'
        b"data: [DONE]\n\n",
        Usage(4, 9),
        id="invalid-field-keeps-last-valid",
    ),
    pytest.param(
        b'data: {"usage": {"completion_tokens": 2}}\n\n'
        b"data: not json but usage\n\n"
        b'data: {"usage": {"prompt_tokens": 6}}\n\n',
        Usage(6, 2),
        id="per-field-last-wins",
    ),
]


@pytest.mark.parametrize(("body", "expected"), STREAMS)
def test_event_stream(body: bytes, expected: Usage | None) -> None:
    assert meter_of(body, event_stream=True).usage == expected
    assert meter_of(body, event_stream=True, chunks=5).usage == expected
    assert bytewise(body, event_stream=True).usage == expected


@pytest.mark.parametrize(("body", "expected"), STREAMS)
def test_event_stream_crlf(body: bytes, expected: Usage | None) -> None:
    body = body.replace(b"\n", b"\r\n")
    assert meter_of(body, event_stream=True, chunks=3).usage == expected
    assert bytewise(body, event_stream=True).usage == expected


def test_event_stream_read_midway() -> None:
    meter = UsageMeter(event_stream=True)
    start, rest = ANTHROPIC_SSE.split(b"event: content_block_start", 1)
    meter.feed(start)
    assert meter.usage == Usage(25, 1)
    meter.feed(b"event: content_block_start" + rest)
    assert meter.usage == Usage(25, 15)


def test_event_stream_unterminated_line_is_read_but_not_committed() -> None:
    meter = UsageMeter(event_stream=True)
    meter.feed(b'data: {"usage": {"prompt_tokens": 3}}')
    assert meter.usage == Usage(3, 0)
    meter.feed(b"garbage\n")  # the line turned out to be invalid JSON
    assert meter.usage is None


LONG = b'data: {"usage": {"prompt_tokens": 3}, "pad": "' + b"x" * MAX_LINE_BYTES + b'"}'


@pytest.mark.parametrize("pieces", [1, 2, 3, 1000])
def test_event_stream_drops_overlong_lines(pieces: int) -> None:
    body = LONG + b"\n\n" + b'data: {"usage": {"completion_tokens": 5}}\n\n' + LONG
    meter = meter_of(body, event_stream=True, chunks=pieces)
    assert meter.usage == Usage(0, 5)
    assert len(meter._pending) <= MAX_LINE_BYTES


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_event_stream_line_limit_is_exact(extra: int) -> None:
    line = b'data: {"usage": {"prompt_tokens": 3}}'
    line += b" " * (MAX_LINE_BYTES - len(line) + extra)
    expected = Usage(3, 0) if extra <= 0 else None
    for chunks in (1, 2):
        assert meter_of(line + b"\n", event_stream=True, chunks=chunks).usage == expected
        assert meter_of(line, event_stream=True, chunks=chunks).usage == expected


# --- properties -----------------------------------------------------------------------------

_SAMPLES = [
    json.dumps(OPENAI_CHAT).encode(),
    json.dumps(OPENAI_EMBEDDINGS).encode(),
    OPENAI_SSE_INCLUDE_USAGE,
    RESPONSES_SSE,
    ANTHROPIC_SSE,
    CUMULATIVE_SSE,
    ANTHROPIC_SSE.replace(b"\n", b"\r\n"),
]

_FRAGMENTS = st.sampled_from(
    [
        b"data: ",
        b"data:",
        b"event: x\n",
        b"\n",
        b"\r\n",
        b"[DONE]",
        b'{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}',
        b'{"usage": {"input_tokens": 5}}',
        b'{"usage": {"output_tokens": 6}}',
        b'{"usage": null}',
        b'"usage": {',
        b"usage",
        b"}",
        b"{",
    ]
)

_BODIES = st.one_of(
    st.sampled_from(_SAMPLES),
    st.lists(st.one_of(_FRAGMENTS, st.binary(max_size=8)), max_size=30).map(b"".join),
    st.binary(max_size=300),
)


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@given(body=_BODIES, cuts=st.lists(st.integers(min_value=0), max_size=20), sse=st.booleans())
def test_split_anywhere_same_result(body: bytes, cuts: list[int], sse: bool) -> None:
    whole = UsageMeter(event_stream=sse, max_json_bytes=4096)
    whole.feed(body)
    split = UsageMeter(event_stream=sse, max_json_bytes=4096)
    for piece in _split(body, cuts):
        split.feed(piece)
    assert split.usage == whole.usage


@given(chunks=st.lists(st.binary(max_size=64), max_size=20), sse=st.booleans())
def test_garbage_never_raises(chunks: list[bytes], sse: bool) -> None:
    meter = UsageMeter(event_stream=sse, max_json_bytes=256)
    for chunk in chunks:
        meter.feed(chunk)
        result = meter.usage
        assert result is None or (result.input_tokens >= 0 and result.output_tokens >= 0)


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["usage", "prompt_tokens", "input_tokens", "x"]), inner
            )
        ),
        max_leaves=20,
    )
)
def test_find_usage_never_raises(payload: object) -> None:
    result = find_usage(payload)
    assert result is None or 0 <= result.total <= 2 * MAX_COUNT
    encoded = json.dumps(payload).encode()
    assert meter_of(encoded, event_stream=False).usage == result
    assert meter_of(b"data: " + encoded + b"\n", event_stream=True).usage == result
