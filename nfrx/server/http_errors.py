"""The one place where nfrx failures become HTTP answers.

Routes raise :class:`HttpError`; the app's error handler turns it into a JSON body in the
:data:`ErrorStyle` of the API the client speaks: OpenAI's ``{"error": {"message", "type",
"code"}}`` by default, Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on
``/v1/messages``, a JSON-RPC error with ``data.nfrx.code`` on the MCP relay's routes
(:func:`nfrx.jsonrpc.nfrx_error`), and the original nfrx's flat ``{"error": "<code>",
"message"}`` on the jobs and transfer APIs (a route chooses with
:func:`nfrx.server.gateway.use_error_style`). Failures of the tunnel (:class:`StreamReset`,
:class:`TunnelClosed`) are translated by :func:`from_tunnel_error`, both for the JSON answer
(nothing sent yet) and for the final SSE event (a stream already under way).

What an agent writes never reaches a client: agents are only half trusted, and their reset
reasons name private backend addresses (and, with ``user:pass@`` URLs, credentials). The client
gets the machine-readable code and a fixed message with its request id; the agent's reason, with
URLs redacted, is the error's :attr:`HttpError.detail`, for the operator's log.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from nfrx import jsonrpc
from nfrx.protocol import ResetCode
from nfrx.redact import redact
from nfrx.transport.errors import StreamReset, TunnelClosed

ErrorStyle = Literal["openai", "anthropic", "jsonrpc", "plain"]
"""The shapes of an error body (see the module docstring); the OpenAPI document names the same."""

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class HttpError(Exception):
    """An error answer: status, machine-readable code, and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type: str | None = None,  # noqa: A002 -- the OpenAI field name
        headers: dict[str, str] | None = None,
        detail: str = "",
        rpc_id: str | None = None,
        rpc_code: int = jsonrpc.INTERNAL_ERROR,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type or _default_type(status)
        self.headers = headers or {}
        self.detail = detail or message
        """What the operator's log says about it (never sent to the client)."""
        self.rpc_id = rpc_id
        """``jsonrpc`` style: the id of the request it answers, as JSON text (None: ``null``)."""
        self.rpc_code = rpc_code
        """``jsonrpc`` style: the JSON-RPC error code."""
        self.retryable = retryable
        """``jsonrpc`` style: ``data.nfrx.retryable``."""

    def body(
        self, style: ErrorStyle = "openai", extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        extra = extra or {}
        if style == "jsonrpc":
            body: dict[str, Any] = json.loads(self.json_bytes("jsonrpc"))
            body["error"].update(extra)
            return body
        if style == "plain":  # the original's {"error":"<code>"}, plus a message for people
            return {"error": self.code, "message": self.message, **extra}
        if style == "anthropic":
            error_type = _ANTHROPIC_TYPES.get(self.status, "api_error")
            return {
                "type": "error",
                "error": {"type": error_type, "message": self.message, **extra},
            }
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                **extra,
            }
        }

    def json_bytes(self, style: ErrorStyle = "openai") -> bytes:
        if style == "jsonrpc":  # the id is spliced as it came, not re-encoded
            return jsonrpc.nfrx_error(
                self.rpc_id, self.code, self.message, retryable=self.retryable, code=self.rpc_code
            )
        return json.dumps(self.body(style)).encode()

    def sse_event(self, style: ErrorStyle = "openai", extra: dict[str, Any] | None = None) -> bytes:
        """The error as a final server-sent event (for a stream that already started)."""
        return b"event: error\ndata: " + json.dumps(self.body(style, extra)).encode() + b"\n\n"


def _default_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status in (400, 413, 422):
        return "invalid_request_error"
    if status == 429 or status == 503:
        return "overloaded_error"
    if status == 504:
        return "timeout_error"
    return "api_error"


def unauthorized() -> HttpError:
    return HttpError(
        401,
        "invalid_api_key",
        "missing or invalid API key: send 'Authorization: Bearer <API_KEY>'",
        headers={"WWW-Authenticate": 'Bearer realm="nfrx"'},
    )


def model_not_found(model: str) -> HttpError:
    return HttpError(
        404,
        "model_not_found",
        f"the model {model!r} does not exist: no connected agent serves it",
        type="invalid_request_error",
    )


def request_timeout(seconds: float) -> HttpError:
    return HttpError(504, "timeout", f"the request did not complete within {seconds:g} s")


def worker_busy(capacity: int) -> HttpError:
    why = "queueing is off" if capacity == 0 else f"the queue is full ({capacity} waiting)"
    return HttpError(
        503,
        "worker_busy",
        f"every agent serving this model is busy and {why}; retry later",
        headers={"Retry-After": "1"},
    )


def queue_timeout(seconds: float) -> HttpError:
    return HttpError(
        503,
        "queue_timeout",
        f"no agent became free for this request within {seconds:g} s of queueing",
        headers={"Retry-After": "5"},
    )


def idle_timeout(seconds: float) -> HttpError:
    return HttpError(
        504,
        "idle_timeout",
        f"the backend sent nothing for {seconds:g} s; the request was cancelled",
    )


_RESET_ANSWERS: Final[dict[str, tuple[int, str]]] = {
    ResetCode.TIMEOUT: (504, "the agent's deadline for this request passed"),
    ResetCode.UPSTREAM_UNREACHABLE: (502, "the agent could not reach its backend"),
    ResetCode.UPSTREAM_ERROR: (502, "the agent's backend failed"),
    ResetCode.DRAINING: (503, "the agent is draining and takes no new requests"),
    ResetCode.OVERLOADED: (502, "the agent has no capacity for this request"),
    ResetCode.INTERNAL: (502, "the agent failed"),
    ResetCode.CANCELLED: (502, "the agent cancelled the request"),
    ResetCode.BAD_AGENT_RESPONSE: (502, "the agent sent an invalid response"),
}
"""Status and message for each reset code a client may be told about; any other code an agent
sends is reported as ``agent_error``."""

_RESET_CODES: Final = {ResetCode.TIMEOUT: "timeout", ResetCode.DRAINING: "agent_draining"}
"""Client-facing codes that differ from the reset code (kept from before: clients match them)."""


def from_tunnel_error(exc: StreamReset | TunnelClosed, request_id: str) -> HttpError:
    """Map the end of a stream to what the client is told (502 unless it was a timeout or a
    drain): a fixed message naming ``request_id``; the agent's own words only in ``detail``."""
    if isinstance(exc, TunnelClosed):
        return HttpError(
            502,
            "agent_disconnected",
            f"the agent serving this request disconnected (request id {request_id})",
            detail=f"agent_disconnected: {redact(exc.reason)}",
        )
    status, text = _RESET_ANSWERS.get(exc.code, (502, "the agent reset the request"))
    code = _RESET_CODES.get(exc.code, exc.code if exc.code in _RESET_ANSWERS else "agent_error")
    detail = f"{exc.code[:64]}: {redact(exc.message)}" if exc.message else exc.code[:64]
    return HttpError(status, code, f"{text} (request id {request_id})", detail=detail)
