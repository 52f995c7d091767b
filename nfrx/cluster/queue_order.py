"""One FIFO across the instances' dispatch queues.

Each instance keeps its own :class:`~nfrx.server.dispatch_queue.DispatchQueue` (its waiters are its
clients' requests) and dispatches synchronously on every change, as alone. What is shared is the
*order*: every waiter is registered in a Redis sorted set under a global sequence number, and
every instance mirrors the other instances' entries from the change messages (the set is read
whole after each (re)subscription, and every :data:`RESYNC_SECONDS`).

The rule that makes it one FIFO: a free slot of an agent goes to the oldest waiter, of any
instance, that can use it -- so a local waiter (or a newcomer) lets the slot be while older
entries of other instances that the agent could serve are at least as many as its free slots
(:meth:`SharedOrder.defers`). Those instances see the same slot free (the agent's Load frame) and
dispatch their own waiter; their removal message lets this instance go on. An entry counts only
for an agent attached to its instance (the directory says which): a waiter nobody can serve does
not hold the others up. A conflict the views did not catch (two instances both sent the agent a
request for its last slot) is settled by the agent, which refuses one as ``overloaded``; that
request goes back to the front of its instance's queue with its sequence number.

A known gap in the order (not in capacity), seen only with the CPU saturated (the cross-instance
FIFO test then failed about once in ten runs), most likely this race: the removal message of a
waiter that instance B dispatched reaches instance A through Redis before B's request reached
the agent through B's tunnel; A sends its own next waiter, and if that one arrives first the
agent takes it and refuses B's as ``overloaded``, so the two are served in swapped order
(nothing is lost or run twice). Closing it needs the agent to confirm the slot before the
removal is published.

Nothing here is on the path of a request that finds a free agent while nobody waits elsewhere:
:meth:`SharedOrder.waiting` is 0 and the dispatch queue asks nothing else. A queued request
costs two Redis commands (one script call to join, one to leave), both off its path: the writer
task sends them, several waiters' changes in one call.

While Redis is unreachable (``degraded``) or the mirror is not in step, the mirror is ignored:
each instance serves its own queue in order.
"""

from __future__ import annotations

import itertools
import json
import logging
import weakref
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.server.dispatch_queue import QueueOrder
from nfrx.server.scheduler import alias_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.cluster.store import Store
    from nfrx.server.dispatch_queue import DispatchQueue, Ticket
    from nfrx.server.registry import AgentRecord

log = logging.getLogger("nfrx.cluster")

RESYNC_SECONDS: Final = 10.0
"""Seconds between full reads of the shared queue (heals a message lost in a reconnect)."""


@attrs.frozen(kw_only=True)
class Entry:
    """A waiter of another instance, as this one mirrors it."""

    seq: int
    instance: str
    kind: str
    model: str
    agent_id: str | None
    aliases: bool

    def eligible(self, agent: AgentRecord) -> bool:
        """Could ``agent`` serve it (its model, exactly or by alias; its agent restriction)?"""
        if agent.kind != self.kind or (self.agent_id is not None and agent.id != self.agent_id):
            return False
        if self.model in agent.models:
            return True
        key = alias_key(self.model) if self.aliases else None
        return key is not None and any(alias_key(m) == key for m in agent.models)


def encode_entry(instance: str, uid: int, ticket: Ticket) -> str:
    return json.dumps(
        {
            "i": instance,
            "u": uid,
            "k": ticket.kind,
            "m": ticket.model,
            "a": ticket.agent_id,
            "x": ticket.aliases,
        },
        separators=(",", ":"),
    )


def decode_entry(seq: int, text: str) -> Entry | None:
    try:
        data = json.loads(text)
        agent_id = data.get("a")
        return Entry(
            seq=seq,
            instance=str(data["i"]),
            kind=str(data["k"]),
            model=str(data["m"]),
            agent_id=str(agent_id) if agent_id is not None else None,
            aliases=bool(data.get("x", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class SharedOrder(QueueOrder):
    """The shared order of one instance's queue (see the module docstring)."""

    def __init__(
        self,
        queue: DispatchQueue,
        instance_id: str,
        attached: Callable[[str, str, str], bool],
    ) -> None:
        self.instance_id = instance_id
        self.attached = attached
        """``attached(instance, kind, agent_id)``: does that agent hold a tunnel to it?"""
        self.mirror: dict[str, Entry] = {}
        """Other instances' entries, by their text in the sorted set."""
        self.registered: dict[Ticket, tuple[int, str]] = {}
        """This instance's waiters as written to Redis: (score, entry text)."""
        self.in_step = False
        """The mirror follows the shared set (subscribed and read); else it is ignored."""
        self._seqs: weakref.WeakKeyDictionary[Ticket, int] = weakref.WeakKeyDictionary()
        """The last score of every ticket (a requeued one keeps its place)."""
        self._uids = itertools.count(1)
        self._queue = queue
        self._dirty = trio.Event()

    # -- the hooks the dispatch queue calls ----------------------------------------------------

    def waiting(self) -> int:
        return len(self.mirror) if self.in_step else 0

    def defers(self, ticket: Ticket, agent: AgentRecord) -> bool:
        mine = self.registered.get(ticket)
        before = mine[0] if mine is not None else None
        older = 0
        for entry in self.mirror.values():
            if before is not None and entry.seq >= before:
                continue
            if entry.eligible(agent) and self.attached(entry.instance, agent.kind, agent.id):
                older += 1
                if older >= agent.free_slots:
                    return True
        return False

    def ahead(self, ticket: Ticket) -> int:
        if not self.in_step:
            return 0
        mine = self.registered.get(ticket)
        if mine is None:
            return len(self.mirror)
        return sum(1 for entry in self.mirror.values() if entry.seq < mine[0])

    def changed(self, queue: DispatchQueue) -> None:
        self._dirty.set()

    # -- keeping Redis in step with the local waiters ------------------------------------------

    async def write(self, store: Store) -> None:
        """Write what changed since the last call (joins and leaves, one script call). Raises
        :class:`~nfrx.cluster.store.ClusterUnavailable`; what failed is written next time."""
        self._dirty = trio.Event()
        waiters = self._queue.waiters()
        present = set(waiters)
        removes = [text for ticket, (_, text) in self.registered.items() if ticket not in present]
        adds: list[tuple[Ticket, int | None, str]] = []
        last = max((i for i, t in enumerate(waiters) if t in self.registered), default=-1)
        for index, ticket in enumerate(waiters):
            if ticket in self.registered:
                continue
            score = self._seqs.get(ticket)
            if score is None and index < last:
                score = 0  # put in front of waiters registered before it: a retry goes first
            adds.append((ticket, score, encode_entry(self.instance_id, next(self._uids), ticket)))
        if not adds and not removes:
            return
        scores = await store.queue_update([(s, text) for _, s, text in adds], removes)
        for ticket in [t for t in self.registered if t not in present]:
            del self.registered[ticket]
        for (ticket, _, text), score in zip(adds, scores, strict=True):
            self.registered[ticket] = (score, text)
            self._seqs[ticket] = score

    async def wait_dirty(self) -> None:
        await self._dirty.wait()

    def forget_registrations(self) -> None:
        """Redis lost what this instance wrote (it restarted, or was unreachable): write every
        waiter again at the next :meth:`write`."""
        self.registered.clear()
        self._dirty.set()

    # -- following the other instances ---------------------------------------------------------

    def load(self, entries: list[tuple[int, str]]) -> None:
        """The whole shared set was read: it replaces the mirror, which is in step from now."""
        mirror: dict[str, Entry] = {}
        for seq, text in entries:
            entry = decode_entry(seq, text)
            if entry is not None and entry.instance != self.instance_id:
                mirror[text] = entry
        self.mirror = mirror
        self.in_step = True
        self._dispatch()

    def apply(self, change: dict[str, Any]) -> None:
        """A change message of the shared set: ``{"add": [[seq, text]...], "del": [text...]}``
        (either may be an empty object: that is how Lua's cjson writes an empty table)."""
        removed = False
        for item in _items(change.get("add")):
            if isinstance(item, list) and len(item) == 2:
                entry = decode_entry(int(item[0]), str(item[1]))
                if entry is not None and entry.instance != self.instance_id:
                    self.mirror[str(item[1])] = entry
        for text in _items(change.get("del")):
            removed = self.mirror.pop(str(text), None) is not None or removed
        if removed:
            self._dispatch()

    def purge(self, live: set[str]) -> list[str]:
        """Drop the entries of instances that are not live; returns their texts (to remove from
        Redis too)."""
        gone = [text for text, entry in self.mirror.items() if entry.instance not in live]
        for text in gone:
            del self.mirror[text]
        if gone:
            self._dispatch()
        return gone

    def out_of_step(self) -> None:
        """The change messages stopped (Redis unreachable): serve this queue alone until the
        next :meth:`load`."""
        if self.in_step:
            self.in_step = False
            self._dispatch()

    def _dispatch(self) -> None:
        self._queue.dispatch()
        self._queue.registry.wake()  # state streams: the shared queue changed


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
