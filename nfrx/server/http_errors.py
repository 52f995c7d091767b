"""The one place where nfrx failures become HTTP answers.

Routes raise :class:`HttpError`; the app's error handler turns it into a JSON body in the style of
the API the client speaks: OpenAI's ``{"error": {"message", "type", "code"}}`` by default,
Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages``, and the
original nfrx's flat ``{"error": "<code>", "message"}`` on the jobs and transfer APIs (the route
sets ``scope["nfrx.error_style"]``). Failures of the tunnel (:class:`StreamReset`,
:class:`TunnelClosed`) are translated by :func:`from_tunnel_error`, both for the JSON answer
(nothing sent yet) and for the final SSE event (a stream already under way).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed

ErrorStyle = Literal["openai", "anthropic", "plain"]

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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.type = type or _default_type(status)
        self.headers = headers or {}

    def body(
        self, style: ErrorStyle = "openai", extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        extra = extra or {}
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


def from_tunnel_error(exc: StreamReset | TunnelClosed) -> HttpError:
    """Map the end of a stream to what the client is told (502 unless it was a timeout)."""
    if isinstance(exc, TunnelClosed):
        return HttpError(
            502,
            "agent_disconnected",
            f"the agent serving this request disconnected ({exc.reason})",
        )
    if exc.code == ResetCode.TIMEOUT:
        return HttpError(504, "timeout", f"the agent gave up: {exc.message or 'deadline passed'}")
    if exc.code == ResetCode.UPSTREAM_UNREACHABLE:
        return HttpError(502, "upstream_unreachable", exc.message or "backend unreachable")
    if exc.code == ResetCode.DRAINING:
        return HttpError(503, "agent_draining", exc.message or "the agent is draining")
    if exc.code == ResetCode.UPSTREAM_ERROR:
        return HttpError(502, "upstream_error", exc.message or "the backend failed")
    return HttpError(502, exc.code, exc.message or f"the agent reset the request ({exc.code})")
