"""Reason phrases on HTTP/1.1 status lines: ``HTTP/1.1 401 Unauthorized``, not ``HTTP/1.1 401 ``.

hypercorn builds its h11 responses without a reason, and h11 writes what it is given. Clients
do not need the phrase, but people read status lines (``curl -v``, proxy logs, old tools that
show only the line), and a bare number reads as a truncated answer. Neither hypercorn nor h11
has a setting for it, and an ASGI app cannot reach it (ASGI carries the status code only).

So :func:`install` swaps hypercorn's HTTP/1.1 protocol class for a subclass that fills in the
standard phrase (:class:`http.HTTPStatus`) as each response head is serialized. The swap is of
the name ``hypercorn.protocol.H11Protocol``, which ``ProtocolWrapper`` looks up for every new
connection; the override is ``H11Protocol._send_h11_event``, through which hypercorn sends every
h11 event, its own error answers included. Both are hypercorn internals:
``tests/server/test_reason_phrase.py`` checks that they are still there and used, and the end to
end tests read real status lines. HTTP/2 has no reason phrases.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

import h11
import hypercorn.protocol
from hypercorn.protocol.h11 import H11Protocol

if TYPE_CHECKING:
    from hypercorn.typing import H11SendableEvent

PHRASES: dict[int, bytes] = {status.value: status.phrase.encode() for status in HTTPStatus}


class ReasonPhraseH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, with a reason phrase on every status line it knows."""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            phrase = PHRASES.get(event.status_code)
            if phrase is not None:
                # Passing the event's Headers object keeps it as it is (h11 validates lists only).
                event = type(event)(
                    headers=event.headers,
                    status_code=event.status_code,
                    http_version=event.http_version,
                    reason=phrase,
                )
        await super()._send_h11_event(event)


def install() -> None:
    """Make every hypercorn HTTP/1.1 connection opened from now on (in this process) send
    reason phrases. Idempotent."""
    hypercorn.protocol.H11Protocol = ReasonPhraseH11Protocol  # type: ignore[attr-defined]
