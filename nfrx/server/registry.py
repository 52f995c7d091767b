"""The agent registry: who is connected, what they serve, how busy they are.

It is the single source of truth for routing and for state. Changes (an agent connecting or
leaving, a status update, a slot freeing) wake every task waiting in :meth:`wait_changed`, so
nothing polls.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import attrs
import trio

from nfrx.server.usage import Usage

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.transport.session import TunnelSession


class AgentStatus:
    READY = "ready"
    NOT_READY = "not_ready"
    DRAINING = "draining"


class DuplicateAgent(Exception):
    """An agent with this id is connected and alive."""


@attrs.define(eq=False, kw_only=True)
class AgentRecord:
    """One connected agent. Mutable; changed only through :class:`AgentRegistry` methods."""

    kind: str
    id: str
    name: str
    version: str
    session: TunnelSession
    models: tuple[str, ...] = ()
    max_concurrency: int = 1
    status: str = AgentStatus.READY
    embedding_batch_size: int = 0
    options: dict[str, str] = attrs.field(factory=dict)
    """What the agent announced in its Hello's ``options`` (plugin-specific)."""
    inflight: int = 0
    processed_total: int = 0
    failures_total: int = 0
    """Exchanges that failed on the agent's side: backend error, agent gone, timeout."""
    cancelled_total: int = 0
    """Exchanges their client gave up (disconnect, its own timeout): not the agent's failure."""
    connected_at: float = attrs.field(factory=time.time)
    busy_seconds_total: float = 0.0
    """Sum of the durations of this agent's finished exchanges (for average durations)."""
    usage: Usage = attrs.field(factory=Usage)
    """Tokens relayed through this agent."""
    dispatch_seq: int = 0
    """When this agent last got a request (a registry-wide counter): ties go to the oldest."""
    busy_elsewhere: int = 0
    """Slots the agent says other instances' streams hold (its Load frames; 0 alone)."""
    saturated: bool = False
    """The agent refused a stream as ``overloaded``: no dispatch until it says more (a Load or a
    Status) or one of this instance's own streams on it ends."""
    heard: int = 0
    """Load and Status frames received from the agent: a refusal that crossed one is stale."""

    @property
    def free_slots(self) -> int:
        """Slots of the agent this instance may still take (its own count, less the others')."""
        return self.max_concurrency - self.inflight - self.busy_elsewhere

    @property
    def load(self) -> int:
        """Slots taken on the agent, by every instance as far as this one knows."""
        return self.inflight + self.busy_elsewhere

    @property
    def has_capacity(self) -> bool:
        return (
            self.status == AgentStatus.READY
            and self.free_slots > 0
            and not self.saturated
            and not self.session.closed
        )


@attrs.define
class _Served:
    created: int
    """Unix time the model was first announced (since it was last served by nobody)."""
    agents: int = 1
    """Registered agents that list it."""


class AgentRegistry:
    """Connected agents, by kind (``llm``, ...) and id."""

    def __init__(self) -> None:
        self._agents: dict[str, dict[str, AgentRecord]] = {}
        self._changed = trio.Event()
        self.version = 0
        """Counts the changes: a waiter that saw ``version`` misses none made since
        (:meth:`wait_changed`)."""
        self._listeners: list[Callable[[], None]] = []
        self._dispatch_counter = itertools.count(1)
        self._served: dict[tuple[str, str], _Served] = {}
        """(kind, model) -> when it was first seen and how many registered agents list it;
        a model no registered agent lists is forgotten (memory follows the live agents)."""
        self.roster = 0
        """Counts the agents added and removed: a listener tells a change of who is here from
        one of how busy they are (several instances publish who is here at once)."""

    # -- membership ----------------------------------------------------------------------------

    def add(self, record: AgentRecord) -> None:
        """Register ``record``. Raises :class:`DuplicateAgent` if its id belongs to a live agent."""
        agents = self._agents.setdefault(record.kind, {})
        existing = agents.get(record.id)
        if existing is not None and not existing.session.closed:
            raise DuplicateAgent(record.id)
        if existing is not None:
            self._unserve(existing.kind, existing.models)
        agents[record.id] = record
        self._serve(record.kind, record.models)
        self.roster += 1
        self._notify()

    def remove(self, record: AgentRecord) -> None:
        """Forget ``record`` (only if it is still the registered one for its id)."""
        agents = self._agents.get(record.kind, {})
        if agents.get(record.id) is record:
            del agents[record.id]
            self._unserve(record.kind, record.models)
            self.roster += 1
            self._notify()

    def update(
        self,
        record: AgentRecord,
        *,
        models: tuple[str, ...],
        max_concurrency: int,
        status: str,
        embedding_batch_size: int,
    ) -> None:
        if self._agents.get(record.kind, {}).get(record.id) is record:
            self._serve(record.kind, models)
            self._unserve(record.kind, record.models)
        record.models = models
        record.max_concurrency = max_concurrency
        record.status = status
        record.embedding_batch_size = embedding_batch_size
        record.saturated = False
        record.heard += 1
        self._notify()

    def report_load(self, record: AgentRecord, elsewhere: int) -> None:
        """The agent's Load frame: ``elsewhere`` slots are taken by other instances' streams.
        Lifts a saturation (the agent has spoken since it refused)."""
        record.heard += 1
        if (record.busy_elsewhere, record.saturated) == (elsewhere, False):
            return
        record.busy_elsewhere = elsewhere
        record.saturated = False
        self._notify()

    def saturate(self, record: AgentRecord, heard: int) -> None:
        """The agent refused a stream as ``overloaded``: treat it as full until it reports its
        load again or one of this instance's streams on it ends.

        ``heard``: the record's :attr:`~AgentRecord.heard` when that stream was opened. If the
        agent spoke since, the refusal is stale -- its Load may already say that the slot it
        lacked is free (it sends one as soon as it is, and that frame can be read before the
        refusal is handled) -- and the agent stays eligible."""
        if record.heard != heard:
            return
        record.saturated = True
        self.wake()

    def get(self, kind: str, agent_id: str) -> AgentRecord | None:
        return self._agents.get(kind, {}).get(agent_id)

    def agents(self, kind: str) -> list[AgentRecord]:
        """Live agents of ``kind``, oldest connection first."""
        return sorted(
            (a for a in self._agents.get(kind, {}).values() if not a.session.closed),
            key=lambda a: a.connected_at,
        )

    def count(self, kind: str) -> int:
        return len(self.agents(kind))

    # -- models --------------------------------------------------------------------------------

    def _serve(self, kind: str, models: tuple[str, ...]) -> None:
        now = int(time.time())
        for model in set(models):
            served = self._served.get((kind, model))
            if served is None:
                self._served[(kind, model)] = _Served(created=now)
            else:
                served.agents += 1

    def _unserve(self, kind: str, models: tuple[str, ...]) -> None:
        for model in set(models):
            served = self._served[(kind, model)]
            served.agents -= 1
            if not served.agents:
                del self._served[(kind, model)]

    def model_created(self, kind: str, model: str) -> int:
        """Unix time this server first saw ``model`` (0 if no registered agent lists it).

        Stable while at least one registered agent lists the model without a break; once none
        does, it is forgotten, and a later announcement starts a new one.
        """
        served = self._served.get((kind, model))
        return served.created if served is not None else 0

    def models(self, kind: str) -> dict[str, list[AgentRecord]]:
        """Model id -> agents serving it (agents not ready are left out)."""
        table: dict[str, list[AgentRecord]] = {}
        for agent in self.agents(kind):
            if agent.status == AgentStatus.NOT_READY:
                continue
            for model in agent.models:
                table.setdefault(model, []).append(agent)
        return table

    # -- dispatch ------------------------------------------------------------------------------

    def acquire(self, record: AgentRecord) -> None:
        """Take one of ``record``'s slots (the caller chose it with the scheduler)."""
        record.inflight += 1
        record.dispatch_seq = next(self._dispatch_counter)
        self.wake()

    def release(
        self,
        record: AgentRecord,
        *,
        failed: bool = False,
        cancelled: bool = False,
        counted: bool = True,
    ) -> None:
        """Give the slot back; wakes waiters at once. The exchange is counted as processed, as
        failed, or -- ``cancelled``, which wins over ``failed`` -- as given up by its client.
        ``counted=False``: the slot was never used (its request left before starting), so
        nothing is recorded."""
        record.inflight -= 1
        record.saturated = False
        if counted and cancelled:
            record.cancelled_total += 1
        elif counted and failed:
            record.failures_total += 1
        elif counted:
            record.processed_total += 1
        self._notify()

    # -- change notification -------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` synchronously after every change (the dispatch queue uses this)."""
        self._listeners.append(listener)

    def wake(self) -> None:
        """Wake :meth:`wait_changed` waiters (state streams) for a change that frees nothing:
        a slot taken, a request queued. Dispatch listeners are not called."""
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self, seen: int | None = None) -> None:
        """Return after the next change of any agent (membership, status, capacity); at once if
        there was one since :attr:`version` was ``seen``."""
        if seen is not None and seen != self.version:
            await trio.lowlevel.checkpoint()
            return
        await self._changed.wait()
