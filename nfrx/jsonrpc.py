"""JSON-RPC 2.0 error responses, as nfrx writes them (the MCP relay's errors, on both sides).

Two kinds: :func:`error`, any JSON-RPC error response; and :func:`nfrx_error`, an error nfrx
itself produced for a request -- ``-32603`` unless said otherwise (never a code from the spec's
reserved range that could pass for the provider's), a message starting ``nfrx:`` and
``data.nfrx`` naming it (``code``, ``retryable``, and the request id when there is one). The
server's ``jsonrpc`` error style (:mod:`nfrx.server.http_errors`) answers with the latter.

Request ids are carried as their exact JSON text (``1`` and ``"1"`` are different requests) and
spliced in verbatim; None is ``null``.
"""

from __future__ import annotations

import json
from typing import Any, Final

INTERNAL_ERROR: Final = -32603
INVALID_REQUEST: Final = -32600
PARSE_ERROR: Final = -32700


def error(
    request_id: str | None, code: int, message: str, data: dict[str, Any] | None = None
) -> bytes:
    """A JSON-RPC error response; ``request_id`` is JSON text (spliced verbatim) or None."""
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f'{{"jsonrpc":"2.0","id":{request_id or "null"},"error":{encoded}}}'.encode()


def nfrx_error(
    request_id: str | None,
    nfrx_code: str,
    message: str,
    *,
    retryable: bool,
    req_id: str = "",
    code: int = INTERNAL_ERROR,
) -> bytes:
    """An error nfrx itself produced for a request (see the module docstring)."""
    nfrx: dict[str, Any] = {"code": nfrx_code, "retryable": retryable}
    if req_id:
        nfrx["req_id"] = req_id
    return error(request_id, code, f"nfrx: {message}", {"nfrx": nfrx})
