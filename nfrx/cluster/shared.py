"""An instance among several sharing one Redis: the hooks of :class:`LocalCluster` over Redis.

Task tree (:meth:`SharedCluster.run`, started by the runner once hypercorn listens; owns the
coredis client, whose connections live exactly as long)::

    SharedCluster.run
    +-- heartbeat: renews this instance's record and agents, reads the others' (membership,
    |   directory), purges dead instances' queue entries, tells local agents of changes; beats
    |   at once (and has the others read it) when an agent comes or goes
    +-- listener: subscribed to the change messages (queue entries, membership); reads the
    |   whole queue after each subscription
    +-- queue writer: registers this instance's waiters, removes those that left
    +-- chores: the write-behind of docling tasks and MCP sessions (bounded; dropped if full)

Degraded: when a heartbeat fails, the instance logs it once, says ``degraded`` in ``/healthz``
and its state, stops following the shared queue (its own queue stays FIFO) and tells agents
nothing new (they keep the tunnels they have). Every task retries on its own; the first
heartbeat that succeeds again logs the recovery, writes back what Redis may have lost (its
record, its waiters) and the listener reads the queue again. Nothing waits on Redis in a
request's path but the lookups that must (a docling poll or an MCP session this instance has
not seen), and those answer "unknown" when Redis is unreachable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from nfrx._version import __version__
from nfrx.cluster.address import parse
from nfrx.cluster.directory import Fleet, InstanceView
from nfrx.cluster.local import LocalCluster
from nfrx.cluster.members import HEARTBEAT, RECORD_TTL, Membership, advertise_url
from nfrx.cluster.queue_order import RESYNC_SECONDS, SharedOrder
from nfrx.cluster.store import (
    EVENTS,
    CancelledNoise,
    ClusterUnavailable,
    MemberRecord,
    Store,
    translated,
)
from nfrx.config.server import default_instance_id
from nfrx.protocol import Members
from nfrx.redact import redact

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.protocol import Headers
    from nfrx.server.gateway import Gateway

log = logging.getLogger("nfrx.cluster")

CHORES: Final = 1024
"""Write-behind operations (docling tasks, MCP sessions) that may wait; more are dropped."""
LEAVE_TIMEOUT: Final = 1.0
"""Seconds a stopping instance gives Redis to forget it (else its record expires)."""
SESSION_RENEW_EVERY: Final = 0.1
"""An MCP session's shared record is renewed at most once per this fraction of its idle time."""


class SharedCluster(LocalCluster):
    """This instance among the others (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.instance_id = self.config.instance_id or default_instance_id()
        self.address = parse(self.config.redis_url)
        self.url = ""
        self.started_at = time.time()
        self.draining = False
        self._degraded = False
        self._membership: Membership | None = None
        self._store: Store | None = None
        self._beat_now = trio.Event()
        self._agents_sent = ""
        self._roster_sent = -1
        """The registry's roster as the last heartbeat published it."""
        gateway.registry.subscribe(self._registry_changed)
        self.order = SharedOrder(gateway.queue, self.instance_id, self._attached)
        gateway.queue.order = self.order
        self._chores_in, self._chores_out = trio.open_memory_channel[
            "Callable[[Store], Awaitable[None]]"
        ](CHORES)
        self._renewed: dict[tuple[str, str], float] = {}
        self._client: Any = None
        self._client_ready = trio.Event()

    async def redis(self) -> Any:
        """This instance's coredis client (one connection pool, shared with the plugins that
        keep their state in Redis), once :meth:`run` made it. Calls through it go through
        :func:`~nfrx.cluster.store.translated`."""
        await self._client_ready.wait()
        return self._client

    # -- the hooks -----------------------------------------------------------------------------

    def members(self) -> Headers:
        if self._membership is None:
            return () if self.draining else ((self.instance_id, self.url),)
        return self._membership.for_agents()

    @property
    def degraded(self) -> bool:
        return self._degraded

    def health(self) -> dict[str, Any]:
        members = self._membership.members if self._membership is not None else {}
        return {
            "instance": self.instance_id,
            "redis": "unreachable" if self._degraded else "ok",
            "instances": len(members),
        }

    def fleet(self) -> Fleet | None:
        membership = self._membership
        if membership is None:
            return None
        views = []
        for member in sorted(membership.members.values(), key=lambda m: m.id):
            this = member.id == self.instance_id
            views.append(
                InstanceView(
                    id=member.id,
                    url=member.url,
                    started_at=member.started_at,
                    draining=self.draining if this else member.draining,
                    version=member.version,
                    agents=() if this else tuple(membership.agents.get(member.id, ())),
                    this=this,
                )
            )
        return Fleet(
            instance_id=self.instance_id,
            instances=tuple(views),
            degraded=self._degraded,
            queued_elsewhere=self.order.waiting(),
        )

    def drain_started(self) -> None:
        self.draining = True
        self._beat_now.set()

    def task_accepted(self, task_id: str, agent_id: str) -> None:
        self._chore(lambda store: store.put_task(task_id, agent_id))

    async def task_agent(self, task_id: str) -> str | None:
        return await self._lookup(lambda store: store.get_task(task_id))

    async def session_opened(
        self, relay_id: str, session_id: str, credential: str, protocol_version: str
    ) -> None:
        value = json.dumps({"credential": credential, "protocol_version": protocol_version})
        idle = self.config.mcp_session_idle
        self._renewed[(relay_id, session_id)] = trio.current_time()
        store = self._store
        if store is not None:
            try:
                await store.put_session(relay_id, session_id, value, idle)
            except ClusterUnavailable as exc:
                log.warning("MCP session %s... not shared: %s", session_id[:8], exc)

    def session_used(self, relay_id: str, session_id: str) -> None:
        idle = self.config.mcp_session_idle
        now = trio.current_time()
        last = self._renewed.get((relay_id, session_id))
        if last is not None and now - last < idle * SESSION_RENEW_EVERY:
            return
        self._renewed[(relay_id, session_id)] = now
        self._chore(lambda store: store.touch_session(relay_id, session_id, idle))

    def session_ended(self, relay_id: str, session_id: str) -> None:
        self._renewed.pop((relay_id, session_id), None)
        self._chore(lambda store: store.drop_session(relay_id, session_id))

    async def find_session(self, relay_id: str, session_id: str) -> tuple[str, str] | None:
        text = await self._lookup(lambda store: store.get_session(relay_id, session_id))
        if text is None:
            return None
        try:
            value = json.loads(text)
            return str(value["credential"]), str(value.get("protocol_version", ""))
        except (ValueError, KeyError, TypeError):
            return None

    async def session_in_use_elsewhere(self, relay_id: str, session_id: str) -> bool:
        self._renewed.pop((relay_id, session_id), None)
        return await self.find_session(relay_id, session_id) is not None

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self, binds: list[str], *, task_status: trio.TaskStatus[None]) -> None:
        from nfrx.cluster.address import connect

        self.url = advertise_url(self.config, binds)
        self._membership = Membership(self._record())
        # coredis logs each of its own retries at INFO; this module says what matters, once.
        coredis_log = logging.getLogger("coredis")
        coredis_log.setLevel(logging.WARNING)
        if not any(isinstance(f, CancelledNoise) for f in coredis_log.filters):
            coredis_log.addFilter(CancelledNoise())
        client = connect(self.address)
        async with client:
            self._client = client
            self._client_ready.set()
            store = self._store = Store(client)
            try:
                async with trio.open_nursery() as nursery:
                    with contextlib.suppress(ClusterUnavailable):
                        await store.prepare()
                    await self._beat(store)  # bounded: a Redis that is down does not hold us
                    log.info(
                        "instance %s (%s) sharing %s%s",
                        self.instance_id,
                        self.url,
                        redact(self.config.redis_url),
                        ": degraded until it answers" if self._degraded else "",
                    )
                    nursery.start_soon(self._heartbeat, store)
                    nursery.start_soon(self._listen, client, store)
                    nursery.start_soon(self._write_queue, store)
                    nursery.start_soon(self._run_chores, store)
                    task_status.started()
            finally:
                self._store = None

    async def leave(self) -> None:
        store = self._store
        if store is None:
            return
        with trio.move_on_after(LEAVE_TIMEOUT, shield=True):
            try:
                await store.leave(self.instance_id)
            except ClusterUnavailable as exc:
                log.warning("could not leave the instances cleanly: %s", exc)
            else:
                log.info("instance %s left the gateway", self.instance_id)

    def _record(self) -> MemberRecord:
        return MemberRecord(
            id=self.instance_id,
            url=self.url,
            started_at=self.started_at,
            draining=self.draining,
            version=__version__,
        )

    # -- heartbeat -----------------------------------------------------------------------------

    async def _heartbeat(self, store: Store) -> None:
        while True:
            with trio.move_on_after(HEARTBEAT):
                await self._beat_now.wait()
            await self._beat(store)

    def _registry_changed(self) -> None:
        # An agent came or went: publish it now, not at the next beat, and have the others read
        # it at once -- until they do, they pass over this instance's waiters for that agent.
        if self.gateway.registry.roster != self._roster_sent:
            self._beat_now.set()

    async def _beat(self, store: Store) -> None:
        """One heartbeat (see the module docstring); never raises for Redis's sake."""
        self._beat_now = trio.Event()
        membership = self._membership
        assert membership is not None
        draining_news = membership.me.draining != self.draining
        roster = self.gateway.registry.roster
        membership.me = self._record()
        agents = self._agents_json()
        try:
            beat = await store.beat(
                membership.me, agents if agents != self._agents_sent else None, RECORD_TTL
            )
            joined, left = membership.update(beat)
            if beat.lost or draining_news or roster != self._roster_sent:
                await store.announce()
            self._agents_sent = agents
            self._roster_sent = roster
            purge = self.order.purge(set(membership.members))
            await store.queue_remove(purge)
        except ClusterUnavailable as exc:
            self._set_degraded(exc)
            return
        if beat.lost:
            # Joining, or Redis lost our record (it restarted): our waiters and agents must be
            # written again.
            self.order.forget_registrations()
            self._agents_sent = ""
        self._set_degraded(None)
        if joined or left or beat.dead:
            names = ", ".join(sorted(membership.members))
            log.info("instances of the gateway: %s", names)
        news = membership.news_for_agents()
        if news is not None:
            self._tell_agents(news)
        self.gateway.registry.wake()  # state streams: the fleet may have changed

    def _agents_json(self) -> str:
        from nfrx.server.state import Clocks, agent_document

        clocks = Clocks.read()
        registry = self.gateway.registry
        entries = [
            {"kind": kind, **agent_document(agent, clocks)}
            for kind in self.gateway.agent_kinds
            for agent in registry.agents(kind)
        ]
        for entry in entries:
            entry.pop("last_heartbeat", None)  # changes every beat: not worth a rewrite
        return json.dumps(entries, separators=(",", ":"), sort_keys=True)

    def _set_degraded(self, failure: ClusterUnavailable | None) -> None:
        if failure is not None and not self._degraded:
            self._degraded = True
            self.order.out_of_step()
            log.warning(
                "Redis unreachable (%s): degraded: this instance serves its clients through "
                "its own tunnels and queue until Redis answers again",
                failure,
            )
            self.gateway.registry.wake()
        elif failure is None and self._degraded:
            self._degraded = False
            self.order.forget_registrations()  # what we wrote meanwhile may not be there
            log.info("Redis answers again: instance %s is back among the others", self.instance_id)

    def _tell_agents(self, members: Headers) -> None:
        frame = Members(members=members)
        registry = self.gateway.registry
        for kind in self.gateway.agent_kinds:
            for agent in registry.agents(kind):
                agent.session.send_control(frame)

    def _attached(self, instance: str, kind: str, agent_id: str) -> bool:
        membership = self._membership
        if membership is None:
            return False
        return any(
            a.get("kind") == kind and a.get("id") == agent_id
            for a in membership.agents.get(instance, ())
        )

    # -- change messages -----------------------------------------------------------------------

    async def _listen(self, client: Any, store: Store) -> None:
        """Follow the change messages; on any failure, ignore the mirror until subscribed and
        read again."""
        while True:
            try:
                with trio.move_on_after(RESYNC_SECONDS) as cycle:
                    await self._follow(client, store)
                if cycle.cancelled_caught:
                    continue  # a periodic full read (inside _follow)
            except ClusterUnavailable:
                pass
            self.order.out_of_step()
            await trio.sleep(HEARTBEAT)

    async def _follow(self, client: Any, store: Store) -> None:
        with translated("change messages", math.inf):
            async with client.pubsub(
                channels=[EVENTS], ignore_subscribe_messages=True, retry_policy=None
            ) as pubsub:
                self.order.load(await store.queue())
                async for message in pubsub:
                    self._on_message(message)

    def _on_message(self, message: dict[str, Any]) -> None:
        try:
            data = json.loads(message.get("data") or "")
        except (ValueError, TypeError):
            return
        if not isinstance(data, dict):
            return
        if "q" in data and isinstance(data["q"], dict):
            self.order.apply(data["q"])
        if "m" in data:
            self._beat_now.set()

    # -- writers -------------------------------------------------------------------------------

    async def _write_queue(self, store: Store) -> None:
        while True:
            await self.order.wait_dirty()
            try:
                await self.order.write(store)
            except ClusterUnavailable as exc:
                log.debug("queue order not written: %s", exc)
                await trio.sleep(HEARTBEAT)
                self.order.changed(self.gateway.queue)

    def _chore(self, chore: Callable[[Store], Awaitable[None]]) -> None:
        try:
            self._chores_in.send_nowait(chore)
        except trio.WouldBlock:
            log.warning("Redis is behind: a docling task or MCP session record was not shared")

    async def _run_chores(self, store: Store) -> None:
        async with self._chores_out:
            async for chore in self._chores_out:
                try:
                    await chore(store)
                except ClusterUnavailable as exc:
                    log.debug("shared record not written: %s", exc)

    async def _lookup(self, read: Callable[[Store], Awaitable[str | None]]) -> str | None:
        store = self._store
        if store is None:
            return None
        try:
            return await read(store)
        except ClusterUnavailable as exc:
            log.warning("Redis lookup failed: %s", exc)
            return None
