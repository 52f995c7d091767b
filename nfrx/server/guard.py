"""The last resort between the app and hypercorn: one exchange can never end the server process.

hypercorn runs each request's ASGI call as a task of the connection's nursery, which lives in the
nursery that serves every connection. When the call raises, hypercorn logs it and, if no response
had started, sends a 500 of its own -- from a ``finally``. If h11 had refused the app's response
start (a 1xx status, an invalid header), h11 is in its ERROR state, that fallback raises too, and
the exception crosses both nurseries and ends ``nfrx serve`` (issue 13: an agent that answered
101 stopped the server). Agents' heads are checked where they arrive, in the tunnel
(:mod:`nfrx.transport.streams`); this guard is for whatever else could get there, a bug of ours.

:func:`guarded` is the outermost ASGI layer of the server's app (:func:`nfrx.server.app.create_app`
installs it); for every HTTP request a :class:`ResponseGuard` wraps the ASGI ``send``:

* the final body message is sent shielded from cancellation (for at most
  :data:`FINAL_SEND_SECONDS`): hypercorn ends the request -- recycles the keep-alive connection,
  or closes it after a ``Connection: close`` answer -- inside that ``send``, in the app's task,
  and quart-trio cancels that task as soon as hypercorn reports the end of the request to it. A
  cancellation there left the connection neither usable nor closed (most often after a refusal
  sent before the request body had arrived), and the client hanging;
* a response start that fails :func:`~nfrx.headers.check_response_head` never reaches hypercorn:
  the client gets a 500 JSON instead (logged at ERROR) and the rest of that response is dropped;
* an exception that left the app (:meth:`ResponseGuard.fail`) is logged once, with its
  traceback (a socket write that failed because the client left is only noted, at INFO); the
  client gets a 500 JSON if nothing was sent yet, else the call ends without its final body
  message and hypercorn cuts the connection (a truncated answer must not look complete).

Nothing here raises: hypercorn is always left in a state it can finish from.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

import trio

from nfrx.headers import check_response_head

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Asgi = Callable[[Any, Any, Any], Awaitable[None]]

log = logging.getLogger("nfrx.server")

FINAL_SEND_SECONDS: Final = 60.0
"""Bound on the shielded final send (hypercorn's own writes are bounded by TCP_USER_TIMEOUT)."""

INTERNAL_ERROR: Final = json.dumps(
    {
        "error": {
            "message": "the server failed to answer this request",
            "type": "api_error",
            "code": "internal_error",
        }
    }
).encode()


def guarded(app: Asgi) -> Asgi:
    """``app`` behind a :class:`ResponseGuard` for each HTTP request (WebSockets pass through)."""

    async def guard(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        response = ResponseGuard(send)
        try:
            await app(scope, receive, response.send)
        except* Exception as group:
            await response.fail(group)

    return guard


class ResponseGuard:
    """One HTTP request's ``send``, checked (see the module docstring)."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self.started = False
        """A response start went to hypercorn (ours or the app's)."""
        self._replaced = False

    async def send(self, message: Any) -> None:
        if self._replaced:
            await trio.lowlevel.checkpoint()  # a send loop must never spin without one
            return
        if message["type"] == "http.response.start" and not self.started:
            problem = _check_start(message)
            if problem is not None:
                log.error("refused to send an invalid response head (%s); answered 500", problem)
                self._replaced = True
                await self._internal_error()
                return
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.move_on_after(FINAL_SEND_SECONDS, shield=True):
                await self._send(message)
            return
        await self._send(message)

    async def fail(self, error: BaseException) -> None:
        """Answer for an exception that left the app (logged here, with its traceback, unless
        it only says that the connection went away)."""
        if _connection_lost(error):
            log.info("the connection closed while the answer was being sent (%r)", error)
            return
        log.error("request failed", exc_info=error)
        if self.started or self._replaced:
            return  # ending the call without the final body message cuts the connection
        self._replaced = True
        try:
            await self._internal_error()
        except Exception:  # the client is gone, or hypercorn cannot send: nothing left to say
            log.debug("could not send the 500 answer", exc_info=True)

    async def _internal_error(self) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(INTERNAL_ERROR)).encode()),
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": INTERNAL_ERROR})


_LOST: Final = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError)
"""What hypercorn's socket writes raise when the client left: BusyResourceError too, from the
race between a last write and hypercorn's own ``send_eof`` when it sees the client close (its
``send_eof`` takes no lock; stack.md P5)."""


def _connection_lost(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_connection_lost(inner) for inner in error.exceptions)
    return isinstance(error, _LOST)


def _check_start(message: Any) -> str | None:
    try:
        status = int(message["status"])
        headers = tuple(
            (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
            for name, value in message.get("headers", ())
        )
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed response start: {exc}"
    return check_response_head(status, headers)
