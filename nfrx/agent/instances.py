"""The agent's tunnels, one per instance of the gateway, and the one capacity they share.

A gateway may be several ``nfrx serve`` instances (see :mod:`nfrx.cluster`). Each instance's
Welcome names it and lists the instances agents should keep a tunnel to (``members``: id and
advertise URL), and a :class:`~nfrx.protocol.frames.Members` frame repeats the list when it
changes. :class:`Instances` keeps the set current:

* the instances to dial are the **union of the latest lists of the live tunnels**: an instance
  that left (stopped, or draining: it lists itself no more) drops out once no live tunnel lists
  it, while an instance that lost its own view (Redis unreachable) keeps sending nothing new and
  stays listed by itself -- its tunnels keep serving;
* one **member loop** per listed instance dials ``<advertise URL>/api/<kind>/connect`` whenever
  that instance has no live tunnel, with the reconnect schedule; it ends (after its current
  attempt's backoff) when nobody lists the instance anymore. The agent never closes a live tunnel
  on its own: an instance that leaves closes its tunnels itself, a dead one is found silent;
* the tunnel the runtime dials to ``SERVER_URL`` (the seed, usually through a load balancer)
  counts as the tunnel of whichever instance answered.

Capacity: one ``MAX_CONCURRENCY`` for all tunnels. :meth:`Instances.take` refuses a stream that
would exceed it (the runtime resets it as ``overloaded``); while more than one tunnel is live,
every change of the count sends each tunnel a :class:`~nfrx.protocol.frames.Load` frame with the
slots the *other* tunnels' streams hold (coalesced: one pass per scheduling round, and only to
tunnels whose number changed), so each instance's view of the agent stays current. A tunnel whose
stream was refused gets a Load as soon as a slot is free, and not before -- even the only tunnel
(its instance may hand a slot on before this agent's stream in it ended): its instance counts the
agent as full until then.

Owner: the runtime's connect nursery runs :meth:`Instances.run` (the load reporter and the member
loops' nursery).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from nfrx.protocol import Load

if TYPE_CHECKING:
    from nfrx.protocol import Headers
    from nfrx.transport.session import TunnelSession

log = logging.getLogger("nfrx.agent")


def connect_url(base: str, kind: str) -> str:
    """The tunnel endpoint of ``kind`` on an instance advertised as ``base`` (``ws://h:p``,
    ``https://h/prefix``: http becomes ws, https wss)."""
    if base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    elif base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    return f"{base.rstrip('/')}/api/{kind}/connect"


@attrs.define(eq=False)
class Tunnel:
    """This agent's tunnel to one instance (kept while the instance is listed or connected)."""

    instance_id: str
    """"" for a server that runs alone."""
    session: TunnelSession | None = None
    inflight: int = 0
    """Streams of this tunnel holding one of the agent's slots."""
    load_sent: int = 0
    """The ``elsewhere`` of the last Load frame sent on the current session (-1: one is due
    whatever the number, after a refusal)."""
    members: Headers = ()
    """The latest instance list this tunnel's instance sent."""

    @property
    def live(self) -> bool:
        return self.session is not None and not self.session.closed


MemberDialer = Callable[[str, str], Awaitable[None]]
"""``dial(instance_id, url)``: the member loop of one instance (the runtime's)."""


class Instances:
    """The tunnels of one agent process (see the module docstring)."""

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self.tunnels: dict[str, Tunnel] = {}
        self.slots = 0
        """Streams holding a slot, on every tunnel."""
        self.urls: dict[str, str] = {}
        """Instance id -> advertise URL, for every instance some live tunnel lists."""
        self._dialing: dict[str, trio.CancelScope] = {}
        self._load_changed = trio.Event()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._dial: MemberDialer | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def run(
        self, dial: MemberDialer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Report load and run the member loops (``dial``) until cancelled."""
        self._dial = dial
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await self._report_load()
            finally:
                self._nursery = None

    # -- tunnels -------------------------------------------------------------------------------

    def live_sessions(self) -> list[TunnelSession]:
        return [t.session for t in self.tunnels.values() if t.session is not None and t.live]

    @property
    def any_live(self) -> bool:
        return any(t.live for t in self.tunnels.values())

    def attach(self, instance_id: str, session: TunnelSession, members: Headers) -> Tunnel | None:
        """Make ``session`` the tunnel of ``instance_id``; None if that instance has a live one
        already (the caller closes the newcomer)."""
        tunnel = self.tunnels.get(instance_id)
        if tunnel is not None and tunnel.live:
            return None
        if tunnel is None:
            tunnel = self.tunnels[instance_id] = Tunnel(instance_id)
        tunnel.session, tunnel.load_sent, tunnel.members = session, 0, members
        self._lists_changed()
        return tunnel

    def detach(self, tunnel: Tunnel) -> None:
        """The tunnel's session ended: its instance list no longer counts."""
        tunnel.session = None
        tunnel.members = ()
        if tunnel.instance_id not in self.urls and tunnel.inflight == 0:
            self.tunnels.pop(tunnel.instance_id, None)
        self._lists_changed()

    def listed(self, tunnel: Tunnel, members: Headers) -> None:
        """``tunnel``'s instance sent a new instance list."""
        tunnel.members = members
        self._lists_changed()

    def _lists_changed(self) -> None:
        urls: dict[str, str] = {}
        for tunnel in self.tunnels.values():
            if tunnel.live:
                for instance_id, url in tunnel.members:
                    urls.setdefault(instance_id, url)
        added = [i for i in urls if i not in self.urls]
        gone = [i for i in self.urls if i not in urls]
        self.urls = urls
        for instance_id in gone:
            log.info("instance %s left the gateway: no new tunnel to it", instance_id)
            known = self.tunnels.get(instance_id)
            if known is None or not known.live:
                # Dialling or waiting to: stop. A live tunnel is left to end by itself (its
                # member loop then sees the instance is not wanted and returns).
                scope = self._dialing.pop(instance_id, None)
                if scope is not None:
                    scope.cancel()
        for instance_id in added:
            self._start_member(instance_id)
        self._changed.set()
        self._changed = trio.Event()
        self._load_changed.set()

    def _start_member(self, instance_id: str) -> None:
        if self._nursery is None or self._dial is None or instance_id in self._dialing:
            return
        scope = trio.CancelScope()
        self._dialing[instance_id] = scope
        self._nursery.start_soon(self._member, instance_id, scope, self._dial)

    async def _member(self, instance_id: str, scope: trio.CancelScope, dial: MemberDialer) -> None:
        with scope:
            await dial(instance_id, self.urls[instance_id])
        if self._dialing.get(instance_id) is scope:
            del self._dialing[instance_id]

    def wanted(self, instance_id: str) -> bool:
        """True while some live tunnel lists ``instance_id``."""
        return instance_id in self.urls

    async def wait_changed(self) -> None:
        """Return after the next change of the tunnels or of the lists."""
        await self._changed.wait()

    # -- capacity ------------------------------------------------------------------------------

    def take(self, tunnel: Tunnel) -> bool:
        """Take a slot for a stream of ``tunnel``; False when every slot is taken (the instance
        then counts this agent as full until its next Load, so one is due on ``tunnel`` as soon
        as a slot is free)."""
        if self.slots >= self.max_concurrency:
            tunnel.load_sent = -1
            return False
        self.slots += 1
        tunnel.inflight += 1
        self._load_changed.set()
        return True

    def give_back(self, tunnel: Tunnel) -> None:
        self.slots -= 1
        tunnel.inflight -= 1
        if not tunnel.live and tunnel.inflight == 0 and tunnel.instance_id not in self.urls:
            self.tunnels.pop(tunnel.instance_id, None)
        self._load_changed.set()

    async def _report_load(self) -> None:
        """Send each live tunnel a Load frame when the slots held elsewhere change (only while
        several tunnels are live; one back to 0 when it becomes the only one), and a tunnel that
        was refused one once a slot is free."""
        while True:
            await self._load_changed.wait()
            self._load_changed = trio.Event()
            live = [t for t in self.tunnels.values() if t.live]
            full = self.slots >= self.max_concurrency
            for tunnel in live:
                if tunnel.load_sent == -1 and full:
                    continue  # refused for want of a slot: "free" is the news it waits for
                elsewhere = self.slots - tunnel.inflight if len(live) > 1 else 0
                if elsewhere != tunnel.load_sent and tunnel.session is not None:
                    tunnel.load_sent = elsewhere
                    tunnel.session.send_control(Load(elsewhere=elsewhere))
