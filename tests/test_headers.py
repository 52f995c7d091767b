"""The response-head validator (pure): what may be sent to an HTTP client as a final head."""

from __future__ import annotations

import pytest

from nfrx.headers import (
    MAX_RESPONSE_HEAD_BYTES,
    MAX_RESPONSE_HEADERS,
    check_response_head,
    content_length,
    declared_length,
)

GOOD: list[tuple[int, tuple[tuple[str, str], ...]]] = [
    (200, ()),
    (200, (("content-type", "application/json"), ("content-length", "12"))),
    (404, (("Content-Type", "text/plain"), ("X-Weird_Name.1~", "v"))),
    (599, (("set-cookie", "a=1"), ("set-cookie", "b=2"))),
    (200, (("x-empty", ""), ("x-tab", "a\tb"), ("x-spaces", "  padded  "))),
    (200, (("x-utf8", "naïve café ☕"), ("x-obs", "\x80\xff"))),
    (200, (("content-length", " 0 "), ("transfer-encoding", "Chunked"))),
    (200, tuple((f"x-{i}", "v") for i in range(MAX_RESPONSE_HEADERS))),
]


@pytest.mark.parametrize(("status", "headers"), GOOD)
def test_heads_a_client_may_get(status: int, headers: tuple[tuple[str, str], ...]) -> None:
    assert check_response_head(status, headers) is None


BAD: dict[str, tuple[int, tuple[tuple[str, str], ...], str]] = {
    "101": (101, (), "status 101 is not a final response status"),
    "100": (100, (), "status 100"),
    "199": (199, (), "status 199"),
    "600": (600, (), "status 600"),
    "empty name": (200, (("", "v"),), "invalid header name ''"),
    "space in name": (200, (("x a", "v"),), "invalid header name 'x a'"),
    "colon in name": (200, ((":status", "200"),), "invalid header name ':status'"),
    "non-ASCII name": (200, (("x-é", "v"),), "invalid header name"),
    "CR": (200, (("x", "a\rb"),), "control character in the value of header 'x'"),
    "LF": (200, (("x", "a\nb"),), "control character"),
    "NUL": (200, (("x", "a\x00b"),), "control character"),
    "DEL": (200, (("x", "a\x7fb"),), "control character"),
    "lone surrogate": (200, (("x", "a\ud800b"),), "control character"),
    "content-length word": (200, (("content-length", "ten"),), "invalid content-length 'ten'"),
    "content-length negative": (200, (("content-length", "-1"),), "invalid content-length"),
    "content-length signed": (200, (("content-length", "+1"),), "invalid content-length"),
    "content-length list": (200, (("content-length", "1,1"),), "invalid content-length"),
    "content-length digits": (200, (("content-length", "1" * 19),), "invalid content-length"),
    "content-length unicode": (200, (("content-length", "١٢"),), "invalid content-length"),
    "content-length twice": (
        200,
        (("content-length", "1"), ("Content-Length", "1")),
        "more than one content-length",
    ),
    "transfer-encoding gzip": (
        200,
        (("transfer-encoding", "gzip"),),
        "unsupported transfer-encoding 'gzip'",
    ),
    "transfer-encoding twice": (
        200,
        (("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")),
        "unsupported transfer-encoding",
    ),
    "too many": (
        200,
        tuple((f"x-{i}", "v") for i in range(MAX_RESPONSE_HEADERS + 1)),
        f"{MAX_RESPONSE_HEADERS + 1} headers",
    ),
    "too large": (200, (("x", "v" * MAX_RESPONSE_HEAD_BYTES),), "the headers exceed"),
}


@pytest.mark.parametrize("case", BAD)
def test_heads_no_client_may_get(case: str) -> None:
    status, headers, reason = BAD[case]
    problem = check_response_head(status, headers)
    assert problem is not None
    assert reason in problem


def test_a_long_name_is_quoted_cut_short() -> None:
    problem = check_response_head(200, (("x " * 10_000, "v"),))
    assert problem is not None
    assert len(problem) < 120


def test_content_length_values() -> None:
    assert content_length("0") == 0
    assert content_length(" 12\t") == 12
    assert content_length("9" * 18) == int("9" * 18)
    for bad in ("", " ", "1.0", "0x10", "1e3", "-0", "²", "9" * 19):
        assert content_length(bad) is None, bad
    assert declared_length((("a", "b"), ("Content-Length", "7"))) == 7
    assert declared_length((("a", "b"),)) is None
