"""Membership: which instances make up the gateway, and how agents reach each.

Each instance renews its record in Redis every :data:`HEARTBEAT` seconds with a TTL of
:data:`RECORD_TTL` (three heartbeats): an instance that dies (``kill -9``, a lost host) drops out
within that time, one that stops cleanly removes its record at once. The record carries the
instance's **own** drain flag: draining one instance never disturbs the others (the original
nfrx shared one flag, and persisted it).

What agents are told (:meth:`Membership.for_agents`) is every live instance that is not
draining, with its advertise URL: the agents keep a tunnel to each.
"""

from __future__ import annotations

import socket
import urllib.parse
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from nfrx.cluster.store import Beat, MemberRecord
    from nfrx.config.model import ServerConfig
    from nfrx.protocol import Headers

HEARTBEAT: Final = 1.0
"""Seconds between two renewals of an instance's record (and reads of the others')."""
RECORD_TTL: Final = 3 * HEARTBEAT
"""Seconds an instance's record lives without renewal."""

_EVERY_INTERFACE: Final = frozenset({"", "0.0.0.0", "::", "[::]"})


def advertise_url(config: ServerConfig, binds: list[str]) -> str:
    """``ADVERTISE_URL``, else ``ws(s)://<host>:<port>`` for this instance: the port agents dial
    is AGENT_PORT if set, else the main port as bound (``binds``, hypercorn's URLs); the host is
    HOST, or the machine's name when HOST listens on every interface."""
    if config.advertise_url:
        return config.advertise_url.rstrip("/")
    bound = [urllib.parse.urlsplit(bind) for bind in binds]
    wanted = config.agent_port
    chosen = next((b for b in bound if wanted and b.port == wanted), bound[0] if bound else None)
    host = config.host
    if host in _EVERY_INTERFACE:
        host = socket.getfqdn()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "wss" if config.tls_cert else "ws"
    number = chosen.port if chosen is not None and chosen.port else config.port
    return f"{scheme}://{host}:{number}"


class Membership:
    """The instances as the last heartbeat read them (a value holder; no I/O)."""

    def __init__(self, me: MemberRecord) -> None:
        self.me = me
        self.members: dict[str, MemberRecord] = {me.id: me}
        self.agents: dict[str, list[dict[str, object]]] = {}
        self._told: Headers | None = None

    def update(self, beat: Beat) -> tuple[set[str], set[str]]:
        """Take a heartbeat's reading; returns (ids that joined, ids that left)."""
        before = set(self.members)
        self.members = dict(beat.members)
        self.members[self.me.id] = self.me
        self.agents = {k: v for k, v in beat.agents.items() if k != self.me.id}
        after = set(self.members)
        return after - before, before - after

    def for_agents(self) -> Headers:
        """(id, advertise URL) of every instance agents should keep a tunnel to."""
        return tuple(
            (member.id, member.url)
            for member in sorted(self.members.values(), key=lambda m: m.id)
            if not member.draining
        )

    def news_for_agents(self) -> Headers | None:
        """:meth:`for_agents` if it changed since it was last returned here, else None."""
        members = self.for_agents()
        if members == self._told:
            return None
        self._told = members
        return members
