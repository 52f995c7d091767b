"""The modern-era (2026-07-28) validation ladder of the stdio bridge: pure checks, no I/O.

For a stdio provider the bridge *is* the Streamable HTTP server, so before a modern message
reaches the process it runs the checks the ``mcp`` SDK 2.3.0's modern HTTP entry
(``mcp/server/_streamable_http_modern.py`` with ``mcp/shared/inbound.py``) runs, in the same order
with the same status, code and message, re-implemented here (the relay never imports the SDK):

1. a notification naming a version the provider does not serve is ``400``/``-32022``
   (:func:`envelope_verdict`); a client response is never refused;
2. for a request, a routing header (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``) sent
   twice is ``-32020``;
3. then the envelope ladder (:func:`classify_request`): ``params._meta`` carries the version and
   the client capabilities, else ``-32602``; ``MCP-Protocol-Version``, ``Mcp-Method`` and
   ``Mcp-Name`` equal the body, else ``-32020``; the version is one the provider serves, else
   ``-32022`` with ``data.supported``;
4. then a ``tools/call``'s ``Mcp-Param-*`` headers against the tool's ``x-mcp-header``
   annotations (:func:`validate_param_headers`, ``-32020``); :func:`param_target` says whether a
   request needs that check, and the caller fetches the tool's schema (the bridge does it with a
   ``tools/list`` walk made with the caller's own envelope, and skips the check -- fail-open, like
   the SDK -- when the listing fails, times out or does not name the tool);
5. last, the methods 2026-07-28 removed (:data:`REMOVED_METHODS`) are ``404``/``-32601``
   (:func:`removed_method`; over stdio the SDK answers ``initialize`` with ``-32022`` instead).

The "supported" versions are the modern ones the provider's ``server/discover`` named. Not
mirrored: the SDK's ``Accept`` checks (``406``), because the HTTP agent always sends the provider
its own ``Accept``, so a relayed HTTP provider never makes them either. Valid messages pass
unchanged. Every function here is pure: it reads the message and the headers it is given and
returns a verdict (a :class:`Rejection` to answer with, else ``None`` or an :class:`Envelope`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any, Final

import attrs

from nfrx.plugins.mcp import wire

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from nfrx.protocol import Headers

MODERN_ERROR_STATUS: Final = {-32700: 400, -32600: 400, -32602: 400, -32601: 404}
"""HTTP status of a modern JSON error answer (the spec's table; the 2026 codes -32020..-32022
are 400 too), as a Streamable HTTP provider would send it."""

METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
HEADER_MISMATCH: Final = -32020
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
REMOVED_METHODS: Final = frozenset(
    {"initialize", "logging/setLevel", "ping", "resources/subscribe", "resources/unsubscribe"}
)
"""Spec methods of earlier revisions that 2026-07-28 no longer has (the SDK's version gate:
``SPEC_CLIENT_METHODS`` minus those with a 2026-07-28 schema); the HTTP entry answers them 404."""
NAME_BEARING_METHODS: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""Method -> the ``params`` member ``Mcp-Name`` mirrors."""
ROUTING_HEADERS: Final = frozenset({"mcp-protocol-version", "mcp-method", "mcp-name"})
MCP_PARAM_PREFIX: Final = "Mcp-Param-"


# -- the ladder, in order ------------------------------------------------------------------------


def header_pairs(headers: Headers) -> list[tuple[str, str]]:
    """The client's headers as the checks read them: names lower-cased, values stripped of
    spaces and tabs, the server's ``x-nfrx-`` annotations left out."""
    return [
        (name.lower(), value.strip(" \t"))
        for name, value in headers
        if not name.lower().startswith(wire.META_PREFIX)
    ]


def envelope_verdict(
    kind: str, body: dict[str, Any], pairs: list[tuple[str, str]], supported: Sequence[str]
) -> Envelope | Rejection | None:
    """Steps 1 to 3 of the ladder over a parsed message of ``kind`` (:class:`wire.Kind`): a
    request's :class:`Envelope` when it passed (steps 4 and 5 follow), a :class:`Rejection`, or
    None when nothing more is checked (a notification in a served version, a response)."""
    folded = first_values(pairs)
    if kind == wire.Kind.NOTIFICATION:
        return unsupported_version(folded.get("mcp-protocol-version", ""), supported)
    if kind != wire.Kind.REQUEST:
        return None
    duplicated = duplicated_routing_header(pairs)
    if duplicated is not None:
        return Rejection(HEADER_MISMATCH, f"{duplicated} header appears more than once")
    return classify_request(body, folded, supported)


def param_target(
    body: dict[str, Any], pairs: list[tuple[str, str]]
) -> tuple[str, dict[str, Any]] | None:
    """The tool name and arguments of a ``tools/call`` whose ``Mcp-Param-*`` headers need the
    tool's schema (step 4; the SDK's ``_mcp_param_rejection``), or None: not a well-formed
    ``tools/call``, or nothing mirrored either way, so no declaration can be violated."""
    if body.get("method") != "tools/call":
        return None
    params = body.get("params") or {}
    name = params.get("name")
    if not isinstance(name, str):
        return None
    raw_arguments = params.get("arguments")
    if raw_arguments is not None and not isinstance(raw_arguments, dict):
        return None
    arguments: dict[str, Any] = raw_arguments or {}
    prefix = MCP_PARAM_PREFIX.lower()
    if not arguments and not any(key.startswith(prefix) for key, _ in pairs):
        return None
    return name, arguments


def removed_method(method: str) -> Rejection | None:
    """Step 5: a method 2026-07-28 no longer has is ``404``/``-32601``."""
    if method in REMOVED_METHODS:
        return Rejection(METHOD_NOT_FOUND, "Method not found", method)
    return None


def modern_status(body: bytes) -> int:
    """The HTTP status of the provider's JSON answer to a modern request (200 unless it is an
    error with a code in the spec's table)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return 200
    code = error.get("code") if isinstance(error, dict) else None
    return status_of(code) if isinstance(code, int) else 200


def status_of(code: int) -> int:
    """The HTTP status of a modern JSON error answer with this code."""
    if -32022 <= code <= -32020:
        return 400
    return MODERN_ERROR_STATUS.get(code, 200)


# -- the SDK's checks (mirrors mcp 2.3.0 mcp/shared/inbound.py) ------------------------------------


@attrs.frozen
class Rejection:
    """A modern request refused before it reaches the process: a JSON-RPC error whose HTTP
    status is the spec's table (:data:`MODERN_ERROR_STATUS`, -32020..-32022 -> 400)."""

    code: int
    message: str
    data: Any = None

    @property
    def status(self) -> int:
        return status_of(self.code)

    def body(self, request_id: str | None) -> bytes:
        """The answer; ``request_id`` is the JSON text of the request's id (None: ``null``)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        encoded = json.dumps(error, separators=(",", ":"), ensure_ascii=False)
        return f'{{"jsonrpc":"2.0","id":{request_id or "null"},"error":{encoded}}}'.encode()


@attrs.frozen
class Envelope:
    """A modern request's ``params._meta`` envelope, once it passed the ladder."""

    protocol_version: str
    client_info: Any
    client_capabilities: Any


def first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Header name -> its first value (how the SDK's Starlette mapping reads a header)."""
    folded: dict[str, str] = {}
    for name, value in pairs:
        folded.setdefault(name, value)
    return folded


def duplicated_routing_header(pairs: list[tuple[str, str]]) -> str | None:
    """A routing header sent more than once (first-copy and last-copy readers would disagree)."""
    seen: set[str] = set()
    for name, _ in pairs:
        if name in ROUTING_HEADERS:
            if name in seen:
                return name
            seen.add(name)
    return None


def unsupported_version(requested: str, supported: Sequence[str]) -> Rejection | None:
    if requested in supported:
        return None
    return Rejection(
        UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(supported), "requested": requested},
    )


def classify_request(
    body: dict[str, Any], headers: Mapping[str, str], supported: Sequence[str]
) -> Envelope | Rejection:
    """The modern validation ladder over a request (the SDK's ``classify_inbound_request``
    with headers): envelope keys (-32602), then the headers against the body (-32020), then the
    version (-32022). ``headers`` are keyed by lower-case name."""
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return Rejection(
            INVALID_PARAMS,
            "params._meta must be an object carrying the required "
            f"{PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r} envelope keys",
        )
    assert isinstance(params, dict)
    missing = [key for key in (PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if key not in meta]
    if missing:
        return Rejection(
            INVALID_PARAMS,
            f"params._meta is missing the required envelope key(s): {', '.join(missing)}",
        )
    version: Any = meta[PROTOCOL_VERSION_KEY]
    mismatch = _routing_mismatch(body.get("method"), params, version, headers)
    if mismatch is not None:
        return mismatch
    if not isinstance(version, str):
        return Rejection(INVALID_PARAMS, "the protocol-version envelope value must be a string")
    unsupported = unsupported_version(version, supported)
    if unsupported is not None:
        return unsupported
    return Envelope(version, meta.get(CLIENT_INFO_KEY), meta[CLIENT_CAPABILITIES_KEY])


def _routing_mismatch(
    method: Any, params: dict[str, Any], version: Any, headers: Mapping[str, str]
) -> Rejection | None:
    """The routing headers against the body, in the SDK's order: ``MCP-Protocol-Version``,
    ``Mcp-Method``, then ``Mcp-Name`` for a name-bearing method (-32020)."""
    version_header = headers.get("mcp-protocol-version")
    if version_header is None or version_header != version:
        return Rejection(
            HEADER_MISMATCH,
            "mcp-protocol-version header does not match the request envelope's protocol version",
        )
    if headers.get("mcp-method") != method:
        return Rejection(
            HEADER_MISMATCH, "mcp-method header does not match the request body's method"
        )
    name_key = NAME_BEARING_METHODS.get(method) if isinstance(method, str) else None
    if name_key is not None:
        value = params.get(name_key)
        if value is not None and decode_header_value(headers.get("mcp-name")) != value:
            return Rejection(
                HEADER_MISMATCH,
                f"mcp-name header does not match the request body's {name_key!r} parameter",
            )
    return None


_B64_SENTINEL: Final = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An RFC 9110 token: what an ``x-mcp-header`` value (a header name) may be."""
_HEADER_TYPES: Final = frozenset({"string", "integer", "boolean"})
_CANONICAL_DECIMAL: Final = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
_SUBSCHEMA_ONE: Final = frozenset(
    {
        "items",
        "contains",
        "unevaluatedItems",
        "additionalProperties",
        "propertyNames",
        "unevaluatedProperties",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SUBSCHEMA_LIST: Final = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP: Final = frozenset({"patternProperties", "dependentSchemas", "$defs", "definitions"})


def decode_header_value(value: str | None) -> str | None:
    """A header value, its ``=?base64?...?=`` form decoded; None for a malformed (or
    non-canonical) one, so a corrupt header never matches a body value."""
    if value is None:
        return None
    match = _B64_SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match.group("payload")
    try:
        decoded = base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(decoded).decode("ascii") != payload:
        return None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _schema_positions(root: Any) -> Iterator[tuple[tuple[str, ...] | None, dict[str, Any]]]:
    """Every JSON Schema 2020-12 schema position in ``root`` with its chain of ``properties``
    keys (None once another applicator was crossed); iterative, never dereferences ``$ref``."""
    stack: list[tuple[tuple[str, ...] | None, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for keyword, value in node.items():
            if keyword == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    stack.append(((*path, name) if path is not None else None, sub))
            elif keyword in _SUBSCHEMA_ONE:
                stack.append((None, value))
            elif keyword in _SUBSCHEMA_LIST and isinstance(value, list):
                stack.extend((None, sub) for sub in value)
            elif keyword in _SUBSCHEMA_MAP and isinstance(value, dict):
                stack.extend((None, sub) for sub in value.values())


def _has_invalid_annotation(schema: Any) -> bool:
    """Whether any ``x-mcp-header`` is misplaced, not a token, on a type other than
    string/integer/boolean, or a case-insensitive duplicate (then nothing is validated:
    conforming clients drop such a tool and send no headers)."""
    seen: set[str] = set()
    for path, position in _schema_positions(schema):
        if "x-mcp-header" not in position:
            continue
        header = position["x-mcp-header"]
        if not path or not isinstance(header, str) or not _TOKEN.fullmatch(header):
            return True
        kind = position.get("type")
        if not isinstance(kind, str) or kind not in _HEADER_TYPES or header.lower() in seen:
            return True
        seen.add(header.lower())
    return False


def _render_scalar(value: Any) -> str | None:
    """A body value the way a client mirrors it into a header (None: not mirrorable)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int | float):
        return None
    try:
        return str(value)
    except ValueError:  # an int past the interpreter's digit limit
        return None


def _value_at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _param_matches(kind: Any, value: Any, rendered: str, decoded: str) -> bool:
    """Integer declarations compare numerically (``42`` matches ``42.0``), exactly; anything
    else compares the text."""
    if (
        kind == "integer"
        and not isinstance(value, bool)
        and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
        and _CANONICAL_DECIMAL.fullmatch(decoded) is not None
    ):
        whole, _, fraction = decoded.partition(".")
        if fraction and set(fraction) != {"0"}:
            return False
        try:
            return int(whole) == int(value)
        except ValueError:
            return False
    return decoded == rendered


def validate_param_headers(
    schema: Any, arguments: Mapping[str, Any], pairs: list[tuple[str, str]]
) -> Rejection | None:
    """Each ``x-mcp-header``-annotated argument and its ``Mcp-Param-*`` header must be present
    together and equal (after base64 decoding), or both absent (``null`` counts as absent); a
    recognised header sent twice is refused. The first failure, as -32020 (the SDK's
    ``validate_mcp_param_headers``). ``pairs`` are the raw headers, names lower-cased."""
    if _has_invalid_annotation(schema):
        return None
    folded: dict[str, str] = {}
    duplicated: set[str] = set()
    for name, value in pairs:
        if name in folded:
            duplicated.add(name)
        folded[name] = value
    for path, position in _schema_positions(schema):
        token = position.get("x-mcp-header")
        if not path or not isinstance(token, str):
            continue
        header = f"{MCP_PARAM_PREFIX}{token}"
        problem = _param_problem(
            header,
            folded.get(header.lower()),
            header.lower() in duplicated,
            _value_at(arguments, path),
            position.get("type"),
            ".".join(path),
        )
        if problem is not None:
            return Rejection(HEADER_MISMATCH, problem)
    return None


def _param_problem(
    header: str, raw: str | None, duplicated: bool, value: Any, kind: Any, argument: str
) -> str | None:
    """What is wrong with one annotated argument and its header (None: they agree)."""
    if raw is not None and duplicated:
        return f"{header} header appears more than once"
    if value is None:
        if raw is not None:
            return (
                f"{header} header is present but the request body's {argument!r} argument is absent"
            )
        return None
    rendered = _render_scalar(value)
    if rendered is None:
        if raw is not None:
            return f"{header} header does not match the request body's {argument!r} argument"
        return None
    if raw is None:
        return f"{header} header is missing but the request body's {argument!r} argument is present"
    decoded = decode_header_value(raw)
    if decoded is None:
        return f"{header} header carries a malformed base64 sentinel value"
    if not _param_matches(kind, value, rendered, decoded):
        return f"{header} header does not match the request body's {argument!r} argument"
    return None
