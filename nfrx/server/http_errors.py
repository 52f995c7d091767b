"""The one place where nfrx failures become HTTP answers.

Routes raise :class:`HttpError`; the app's error handler turns it into an OpenAI-style JSON body
``{"error": {"message", "type", "code"}}``. Failures of the tunnel (:class:`StreamReset`,
:class:`TunnelClosed`) are translated by :func:`from_tunnel_error`, both for the JSON answer
(nothing sent yet) and for the final SSE event (a stream already under way).
"""

from __future__ import annotations

import json
from typing import Any

from nfrx.protocol import ResetCode
from nfrx.transport.errors import StreamReset, TunnelClosed


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

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}

    def json_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()

    def sse_event(self) -> bytes:
        """The error as a final server-sent event (for a stream that already started)."""
        return b"event: error\ndata: " + self.json_bytes() + b"\n\n"


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
