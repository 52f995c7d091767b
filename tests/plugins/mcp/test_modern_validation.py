"""The modern-era validation ladder (:mod:`nfrx.plugins.mcp.modern_validation`), pure: its steps
in order, and the ladder and ``Mcp-Param-*`` validator checked case by case against the SDK's own
(``mcp.shared.inbound``), which they mirror."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.inbound import (
    InboundLadderRejection,
    classify_inbound_request,
    validate_mcp_param_headers,
)

from nfrx.plugins.mcp import modern_validation, wire
from nfrx.plugins.mcp.modern_validation import (
    HEADER_MISMATCH,
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
    Envelope,
    Rejection,
    envelope_verdict,
    header_pairs,
    modern_status,
    param_target,
    removed_method,
)
from tests.plugins.mcp.test_stdio_modern import META, MODERN, request

ROUTED = [("mcp-protocol-version", MODERN), ("mcp-method", "tools/list")]


def test_header_pairs_lower_case_strip_and_drop_the_servers_annotations() -> None:
    pairs = header_pairs([("MCP-Method", " tools/list\t"), ("x-nfrx-mcp-era", "modern")])
    assert pairs == [("mcp-method", "tools/list")]


def test_a_notification_is_checked_for_the_version_only() -> None:
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert envelope_verdict(wire.Kind.NOTIFICATION, note, ROUTED, (MODERN,)) is None
    refused = envelope_verdict(wire.Kind.NOTIFICATION, note, [], (MODERN,))
    assert isinstance(refused, Rejection)
    assert (refused.code, refused.status) == (UNSUPPORTED_PROTOCOL_VERSION, 400)
    assert refused.data == {"supported": [MODERN], "requested": ""}


def test_a_client_response_is_never_refused() -> None:
    reply = {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert envelope_verdict(wire.Kind.RESPONSE, reply, [], (MODERN,)) is None


def test_a_duplicated_routing_header_comes_before_the_envelope() -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}  # no envelope at all
    verdict = envelope_verdict(wire.Kind.REQUEST, body, [*ROUTED, ROUTED[1]], (MODERN,))
    assert verdict == Rejection(HEADER_MISMATCH, "mcp-method header appears more than once")


def test_a_valid_request_yields_its_envelope() -> None:
    verdict = envelope_verdict(wire.Kind.REQUEST, request(1, "tools/list"), ROUTED, (MODERN,))
    assert verdict == Envelope(MODERN, META["io.modelcontextprotocol/clientInfo"], {})


@pytest.mark.parametrize(
    ("body", "pairs", "expected"),
    [
        (request(1, "tools/call", {"name": "t", "arguments": {"a": 1}}), [], ("t", {"a": 1})),
        (request(1, "tools/call", {"name": "t"}), [("mcp-param-a", "1")], ("t", {})),
        (request(1, "tools/call", {"name": "t"}), [], None),  # nothing mirrored either way
        (request(1, "tools/call", {"name": 5, "arguments": {"a": 1}}), [], None),
        (request(1, "tools/call", {"name": "t", "arguments": [1]}), [], None),
        (request(1, "prompts/get", {"name": "t", "arguments": {"a": 1}}), [], None),
    ],
)
def test_param_target_names_the_tool_to_look_up(
    body: dict[str, Any], pairs: list[tuple[str, str]], expected: Any
) -> None:
    assert param_target(body, pairs) == expected


def test_removed_methods_are_404() -> None:
    refused = removed_method("ping")
    assert refused == Rejection(METHOD_NOT_FOUND, "Method not found", "ping")
    assert refused.status == 404
    assert refused.body("7") == (
        b'{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"Method not found",'
        b'"data":"ping"}}'
    )
    assert removed_method("tools/list") is None


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b'{"jsonrpc":"2.0","id":1,"result":{}}', 200),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}', 404),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32021,"message":"x"}}', 400),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}', 200),
        (b"not json", 200),
        (b"[1]", 200),
    ],
)
def test_the_status_of_a_modern_json_answer(answer: bytes, status: int) -> None:
    assert modern_status(answer) == status


# -- the pure validators against the SDK's ---------------------------------------------------------


def _sdk(rejection: InboundLadderRejection | Any) -> tuple[int, str, Any] | None:
    if isinstance(rejection, InboundLadderRejection):
        return (rejection.code, rejection.message, rejection.data)
    return None


def _ours(rejection: modern_validation.Rejection | Any) -> tuple[int, str, Any] | None:
    if isinstance(rejection, modern_validation.Rejection):
        return (rejection.code, rejection.message, rejection.data)
    return None


LADDER_CASES: list[tuple[dict[str, Any], dict[str, str]]] = [
    (request(1, "tools/list"), {"mcp-protocol-version": MODERN, "mcp-method": "tools/list"}),
    (request(1, "tools/list"), {"mcp-protocol-version": MODERN}),
    (request(1, "tools/list"), {"mcp-method": "tools/list"}),
    ({"jsonrpc": "2.0", "id": 1, "method": "x"}, {}),
    ({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"_meta": []}}, {}),
    ({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"_meta": {}}}, {}),
    (
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "x",
            "params": {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": 5}},
        },
        {"mcp-protocol-version": "5", "mcp-method": "x"},
    ),
    (
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "x",
            "params": {"_meta": {**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}},
        },
        {"mcp-protocol-version": "2099-01-01", "mcp-method": "x"},
    ),
    (
        request(1, "prompts/get", {"name": "p"}),
        {"mcp-protocol-version": MODERN, "mcp-method": "prompts/get"},
    ),
    (
        request(1, "prompts/get", {"name": "p"}),
        {
            "mcp-protocol-version": MODERN,
            "mcp-method": "prompts/get",
            "mcp-name": "=?base64?cA==?=",
        },
    ),
    (
        request(1, "resources/read", {"uri": "a://b"}),
        {"mcp-protocol-version": MODERN, "mcp-method": "resources/read", "mcp-name": "a://c"},
    ),
    (
        request(1, "resources/read", {}),
        {"mcp-protocol-version": MODERN, "mcp-method": "resources/read"},
    ),
]


@pytest.mark.parametrize(("body", "headers"), LADDER_CASES)
def test_the_ladder_matches_the_sdk(body: dict[str, Any], headers: dict[str, str]) -> None:
    ours = modern_validation.classify_request(body, headers, (MODERN,))
    theirs = classify_inbound_request(body, headers=headers)
    assert _ours(ours) == _sdk(theirs)
    if not isinstance(ours, modern_validation.Rejection):
        assert ours == modern_validation.Envelope(
            MODERN, META["io.modelcontextprotocol/clientInfo"], {}
        )


NESTED = {
    "type": "object",
    "properties": {
        "n": {"type": "integer", "x-mcp-header": "N"},
        "flag": {"type": "boolean", "x-mcp-header": "Flag"},
        "outer": {
            "type": "object",
            "properties": {"inner": {"type": "string", "x-mcp-header": "Inner"}},
        },
    },
}
PARAM_CASES: list[tuple[Any, dict[str, Any], list[tuple[str, str]]]] = [
    (
        NESTED,
        {"n": 42, "flag": True, "outer": {"inner": "é"}},
        [
            ("mcp-param-n", "42.0"),
            ("mcp-param-flag", "true"),
            ("mcp-param-inner", "=?base64?w6k=?="),
        ],
    ),
    (NESTED, {"n": 42}, [("mcp-param-n", "42.5")]),
    (NESTED, {"n": 42}, [("mcp-param-n", "4.2e1")]),
    (NESTED, {"n": 42, "flag": False}, [("mcp-param-n", "42"), ("mcp-param-flag", "False")]),
    (NESTED, {"n": None}, [("mcp-param-n", "1")]),
    (NESTED, {"n": [1]}, [("mcp-param-n", "1")]),
    (NESTED, {"n": [1]}, []),
    (NESTED, {"outer": "flat"}, [("mcp-param-inner", "x")]),
    (NESTED, {"outer": {"inner": "x"}}, [("mcp-param-inner", "=?base64?eA?=")]),
    (
        {"type": "object", "properties": {"a": {"type": "number", "x-mcp-header": "A"}}},
        {"a": 1},
        [],
    ),
    ({"type": "object", "x-mcp-header": "Root"}, {}, [("mcp-param-root", "x")]),
    (
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "x-mcp-header": "A"},
                "b": {"type": "string", "x-mcp-header": "a"},
            },
        },
        {"a": "x"},
        [],
    ),
    (
        {
            "type": "object",
            "anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}],
        },
        {"a": "x"},
        [],
    ),
    (
        {"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "bad name"}}},
        {"a": "x"},
        [],
    ),
    (None, {"a": "x"}, [("mcp-param-a", "y")]),
]


@pytest.mark.parametrize(("schema", "arguments", "pairs"), PARAM_CASES)
def test_param_validation_matches_the_sdk(
    schema: Any, arguments: dict[str, Any], pairs: list[tuple[str, str]]
) -> None:
    class RawHeaders(dict[str, str]):
        """A mapping whose ``items()`` keeps duplicates, as Starlette's headers do."""

        def items(self) -> Any:
            return list(pairs)

    theirs = validate_mcp_param_headers(schema, arguments, RawHeaders(pairs))
    assert _ours(modern_validation.validate_param_headers(schema, arguments, pairs)) == _sdk(theirs)


def test_param_cases_cover_acceptance_and_refusal() -> None:
    """The table above is not all one outcome (a differential test that agrees on nothing
    but ``None`` would prove little)."""
    outcomes = [
        modern_validation.validate_param_headers(schema, arguments, pairs)
        for schema, arguments, pairs in PARAM_CASES
    ]
    assert any(o is None for o in outcomes)
    assert sum(o is not None for o in outcomes) >= 5
