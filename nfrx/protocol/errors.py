"""Protocol errors, named for whose fault they are (the h11 convention).

* :class:`LocalProtocolError` -- *we* tried to do something the protocol forbids (send a frame in
  the wrong state, exceed the peer's credit). It is a bug in our code or a misuse of the
  connection object.
* :class:`RemoteProtocolError` -- the *peer* sent something invalid: undecodable bytes, a frame in
  the wrong state, a frame for a stream it does not own, more data than it was granted. The session
  that sees it closes the tunnel; nothing the peer sends can raise any other exception from
  :meth:`TunnelConnection.receive`.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error :mod:`nfrx.protocol` raises."""


class LocalProtocolError(ProtocolError):
    """We broke the protocol (a bug on this side)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the tunnel must be closed."""
