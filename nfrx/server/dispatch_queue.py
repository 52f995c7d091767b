"""Dispatch: give each request an agent slot now, or queue it until one frees.

One FIFO per server for every agent kind that queues. It is event-driven: the registry calls
:meth:`DispatchQueue.dispatch` synchronously on every change (a slot freed, an agent connected,
a status or model list pushed), and the queue hands the freed capacity to the *oldest* waiting
request that can use it, skipping waiters whose model has no free agent (they do not block the
others). Because this happens inside the change itself, a newcomer can never take a slot an older
waiter could have used: a request that finds a free slot on arrival found one nobody queued wants.

A grant is final once made: the slot is taken in the registry at that moment, and a waiter that
is cancelled after being granted (client gone, deadline) gives it back in
:meth:`DispatchQueue.abandon`.
Nothing here sleeps or polls.

Several instances share one order (:class:`QueueOrder`; :mod:`nfrx.cluster.queue_order`): a local
waiter, or a newcomer, lets an agent's free slot go to an older waiter of another instance
that can use it, and its place counts the waiters of every instance. Alone, nothing changes.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import attrs
import trio

from nfrx.server.scheduler import choose_match, matches

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.server.http_errors import HttpError
    from nfrx.server.registry import AgentRecord, AgentRegistry


@attrs.define(eq=False, kw_only=True)
class Ticket:
    """One request looking for an agent."""

    kind: str
    model: str
    request_id: str = ""
    agent_id: str | None = None
    """Only this agent may serve it (the ``/id/{agent}`` routes)."""
    aliases: bool = False
    exclude: frozenset[str] = frozenset()
    """Agents already tried for this request (a retry goes elsewhere)."""
    missing: Callable[[], HttpError]
    """The answer when no connected agent can ever serve it (404 on a first try)."""
    granted: tuple[AgentRecord, str] | None = None
    error: HttpError | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    queued_at: float = 0.0
    """When it last joined the line (``time.monotonic``: the queue itself needs no Trio run),
    for the queue-wait metric."""

    def candidates(self, registry: AgentRegistry) -> list[tuple[AgentRecord, str, bool]]:
        agents = [
            a
            for a in registry.agents(self.kind)
            if (self.agent_id is None or a.id == self.agent_id) and a.id not in self.exclude
        ]
        return matches(agents, self.model, aliases=self.aliases)


log = logging.getLogger("nfrx.queue")


class QueueFull(Exception):
    pass


class QueueOrder:
    """The order of this instance's waiters among every instance's (this class: alone)."""

    def defers(self, ticket: Ticket, agent: AgentRecord) -> bool:
        """True when older waiters of other instances want ``agent``'s free slots: ``ticket``
        must not take one (it is a newcomer, or a local waiter behind them)."""
        return False

    def ahead(self, ticket: Ticket) -> int:
        """Waiters of other instances ahead of ``ticket``."""
        return 0

    def waiting(self) -> int:
        """Waiters of other instances."""
        return 0

    def changed(self, queue: DispatchQueue) -> None:
        """``queue``'s waiters changed (one joined or left)."""


class DispatchQueue:
    def __init__(self, registry: AgentRegistry, capacity: int) -> None:
        self.registry = registry
        self.capacity = capacity
        self._waiting: list[Ticket] = []
        self.wait_listeners: list[Callable[[float], None]] = []
        """Called with the seconds a ticket waited whenever one leaves the line (granted,
        refused or abandoned); metrics subscribe here."""
        self.order = QueueOrder()
        """Where the waiters stand among other instances' (replaced when several share one)."""
        registry.subscribe(self.dispatch)

    def __len__(self) -> int:
        return len(self._waiting)

    def waiters(self) -> list[Ticket]:
        """The local waiters, oldest first."""
        return list(self._waiting)

    def position(self, ticket: Ticket) -> int:
        """1-based place of ``ticket`` in the queue, other instances' waiters included (0 once
        it left it)."""
        try:
            return self._waiting.index(ticket) + 1 + self.order.ahead(ticket)
        except ValueError:
            return 0

    def _choose(
        self, ticket: Ticket, found: list[tuple[AgentRecord, str, bool]]
    ) -> tuple[AgentRecord, str] | None:
        order = self.order
        if order.waiting():
            found = [m for m in found if not order.defers(ticket, m[0])]
        return choose_match(found)

    def try_now(self, ticket: Ticket) -> tuple[AgentRecord, str] | None:
        """Take a free slot for ``ticket`` if there is one; raise its ``missing`` error if no
        connected agent can serve it at all; None if it has to wait."""
        found = ticket.candidates(self.registry)
        if not found:
            raise ticket.missing()
        chosen = self._choose(ticket, found)
        if chosen is not None:
            self.registry.acquire(chosen[0])
        return chosen

    def enqueue(self, ticket: Ticket, *, front: bool = False) -> None:
        """Put ``ticket`` in line (a retry goes first). Raises :class:`QueueFull`."""
        if not front and len(self._waiting) >= self.capacity:
            raise QueueFull
        ticket.queued_at = time.monotonic()
        if front:
            self._waiting.insert(0, ticket)
        else:
            self._waiting.append(ticket)
        self.registry.wake()
        self.order.changed(self)
        log.info(
            "request %s for %s queued at position %d",
            ticket.request_id,
            ticket.model,
            self.position(ticket),
        )

    def abandon(self, ticket: Ticket) -> None:
        """The waiter is gone: take it out of line, and give back a slot granted to it that it
        never used. Idempotent; safe in ``finally`` and in per-request cleanups."""
        if ticket in self._waiting:
            log.info(
                "request %s left the queue at position %d", ticket.request_id, self.position(ticket)
            )
            self._leave(ticket)
        if ticket.granted is not None:
            agent, _ = ticket.granted
            ticket.granted = None
            self.registry.release(agent, counted=False)

    def dispatch(self) -> None:
        """Hand free capacity to the oldest waiters that can use it (called on every change)."""
        for ticket in list(self._waiting):
            found = ticket.candidates(self.registry)
            if not found:
                ticket.error = ticket.missing()
            else:
                chosen = self._choose(ticket, found)
                if chosen is None:
                    continue
                self.registry.acquire(chosen[0])
                ticket.granted = chosen
            self._leave(ticket)
            ticket.done.set()

    def _leave(self, ticket: Ticket) -> None:
        self._waiting.remove(ticket)
        self.registry.wake()
        self.order.changed(self)
        waited = time.monotonic() - ticket.queued_at
        for listener in self.wait_listeners:
            listener(waited)
