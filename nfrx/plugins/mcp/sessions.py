"""The MCP relay's server-side bookkeeping: relays, their sessions and their in-flight calls.

One :class:`McpRelays` per gateway, owned by its MCP plugin (:mod:`.plugin`). It remembers which
relay ids ever connected (bounded), so that an id seen before but offline now answers 503 "relay
offline" and a never-seen one 404; and it counts how public exchanges ended
(``nfrx_mcp_exchanges``). Per live tunnel it keeps a :class:`RelayState`: the ``Mcp-Session-Id``
table (each session bound to a hash of the credential that created it) and every in-flight
:class:`Call`. A relay's state belongs to one tunnel: when the agent reconnects, the next request
finds a new tunnel and starts from an empty table (the provider's sessions may be gone; stdio ones
are), so clients get 404 and re-initialize.

A :class:`Call` is one public exchange in flight. Its receives run inside :meth:`Call.watch`, a
cancel scope whose deadline is the call's inactivity deadline (``MCP_CALL_TIMEOUT``, moved by
:meth:`Call.touch` on activity) capped by its absolute deadline (``MCP_CALL_MAX``). Other tasks end
a call with :meth:`Call.stop` (the client's own ``notifications/cancelled``, DELETE of the session,
idle reaping), which records why and cancels the scope; the call's owner then reads
:attr:`Call.ended_by` to decide what the client is told. Nothing here blocks.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
from prometheus_client import Counter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord
    from nfrx.transport.session import TunnelSession

SEEN_KEPT: Final = 10_000
"""Relay ids remembered as "connected once" (the oldest are forgotten first)."""

SESSION_PREFIX: Final = 8
"""Characters of a session id shown in state (the full id is a capability)."""


class EndedBy:
    """Why a call was stopped by someone other than its own timers (:attr:`Call.ended_by`)."""

    CLIENT_CANCELLED: Final = "client_cancelled"
    SESSION_ENDED: Final = "session_ended"


def credential_hash(bearer: str | None) -> str:
    """What a session is bound to: a digest of the bearer that created it ("" when none)."""
    return hashlib.sha256(bearer.encode()).hexdigest() if bearer else ""


@attrs.define(eq=False)
class Call:
    """One public MCP exchange in flight (a request, or a long-lived GET / listen stream)."""

    method: str
    request_id: str | None
    """The JSON-RPC id as JSON text (requests only)."""
    session_id: str | None
    idle: float | None
    """Inactivity limit in seconds; None for exempt calls (initialize, streams)."""
    hard_deadline: float
    """Absolute trio deadline (``MCP_CALL_MAX`` after the start; inf for streams)."""
    stream: bool = False
    """A long-lived stream (GET, ``subscriptions/listen``): counted against the stream cap."""
    started: float = attrs.field(factory=trio.current_time)
    idle_deadline: float = math.inf
    ended_by: str | None = None
    _scope: trio.CancelScope | None = None

    def __attrs_post_init__(self) -> None:
        self.touch()

    @property
    def is_request(self) -> bool:
        """A JSON-RPC request that is not a long-lived stream (counted against the cap)."""
        return self.request_id is not None and not self.stream

    @property
    def deadline(self) -> float:
        return min(self.idle_deadline, self.hard_deadline)

    @property
    def timed_out(self) -> bool:
        return self.ended_by is None and trio.current_time() >= self.deadline

    def touch(self) -> None:
        """Provider or nested activity: the inactivity clock starts again."""
        if self.idle is not None:
            self.idle_deadline = trio.current_time() + self.idle
            if self._scope is not None:
                self._scope.deadline = self.deadline

    def stop(self, reason: str) -> None:
        """End the call from outside (see :class:`EndedBy`); its owner tells the client."""
        if self.ended_by is None:
            self.ended_by = reason
        if self._scope is not None:
            self._scope.cancel()

    @contextlib.contextmanager
    def watch(self) -> Iterator[trio.CancelScope]:
        """A cancel scope for one wait of the call's owner: it ends at the call's deadline (moved
        by :meth:`touch`) or when :meth:`stop` is called. Wrap receives only, never a yield."""
        with trio.CancelScope(deadline=self.deadline) as scope:
            if self.ended_by is not None:
                scope.cancel()
            self._scope = scope
            try:
                yield scope
            finally:
                self._scope = None


@attrs.define(eq=False)
class McpSession:
    """A provider session the relay has seen created (``Mcp-Session-Id`` on a response)."""

    id: str
    credential: str
    protocol_version: str = ""
    """The client's latest ``MCP-Protocol-Version`` in this session (sent with the reaper's
    DELETE)."""
    created_at: float = attrs.field(factory=time.time)
    last_used: float = attrs.field(factory=trio.current_time)
    calls: set[Call] = attrs.field(factory=set)

    def use(self) -> None:
        self.last_used = trio.current_time()


@attrs.define(eq=False)
class RelayState:
    """One relay's sessions and calls, for the life of one tunnel."""

    tunnel: TunnelSession
    sessions: dict[str, McpSession] = attrs.field(factory=dict)
    calls: set[Call] = attrs.field(factory=set)
    by_id: dict[tuple[str, str], Call] = attrs.field(factory=dict)
    """(session id, JSON-RPC id) -> the legacy request a client ``notifications/cancelled`` may
    name (only within a session: an anonymous modern caller cannot cancel another's work)."""

    @property
    def requests(self) -> int:
        """JSON-RPC requests in flight (what the concurrency cap counts): never notifications,
        replies to the provider's requests, DELETEs or long-lived streams."""
        return sum(1 for call in self.calls if call.is_request)

    @property
    def streams(self) -> int:
        return sum(1 for call in self.calls if call.stream)

    def add(self, call: Call) -> None:
        self.calls.add(call)
        if call.session_id is not None:
            session = self.sessions.get(call.session_id)
            if session is not None:
                session.calls.add(call)
            if call.request_id is not None and not call.stream:
                self.by_id[(call.session_id, call.request_id)] = call

    def remove(self, call: Call) -> None:
        self.calls.discard(call)
        if call.session_id is not None:
            session = self.sessions.get(call.session_id)
            if session is not None:
                session.calls.discard(call)
            if call.request_id is not None:
                key = (call.session_id, call.request_id)
                if self.by_id.get(key) is call:
                    del self.by_id[key]

    def touch_session(self, session_id: str | None) -> None:
        """Nested activity in a session (a client's reply or notification, a message on its GET
        stream): every request waiting in it may be waiting for exactly that."""
        if session_id is None:
            return
        session = self.sessions.get(session_id)
        if session is None:
            return
        session.use()
        for call in session.calls:
            call.touch()

    def end_session(self, session_id: str) -> McpSession | None:
        """Forget a session and stop everything in flight in it."""
        session = self.sessions.pop(session_id, None)
        if session is not None:
            for call in list(session.calls):
                call.stop(EndedBy.SESSION_ENDED)
        return session

    def idle_sessions(self, idle: float) -> list[McpSession]:
        """Sessions unused for ``idle`` seconds with nothing in flight, removed from the table."""
        cutoff = trio.current_time() - idle
        expired = [s for s in self.sessions.values() if s.last_used <= cutoff and not s.calls]
        for session in expired:
            self.end_session(session.id)
        return expired


class McpRelays:
    """Every relay this gateway knows (see the module docstring), and how their exchanges
    ended."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.states: dict[str, RelayState] = {}
        self.exchanges = Counter(
            "nfrx_mcp_exchanges",
            "Public MCP exchanges relayed, by relay id, kind (request, notification, response, "
            "stream, delete, metadata) and outcome (success, error, timeout, cancelled, "
            "client_cancelled, session_ended).",
            ["relay", "kind", "outcome"],
            registry=None,  # the gateway's registry takes it (McpPlugin.collectors)
        )
        gateway.registry.subscribe(self._note_agents)

    def _note_agents(self) -> None:
        for agent in self.gateway.registry.agents("mcp"):
            self.seen[agent.id] = None
            self.seen.move_to_end(agent.id)
        while len(self.seen) > SEEN_KEPT:
            self.seen.popitem(last=False)

    def state(self, agent: AgentRecord) -> RelayState:
        """The state of ``agent``'s current tunnel (a fresh one after a reconnect)."""
        state = self.states.get(agent.id)
        if state is None or state.tunnel is not agent.session:
            # The old tunnel ended: its calls fail with TunnelClosed on their own (stopping them
            # here would tell their clients "session ended" instead of "relay disconnected").
            state = self.states[agent.id] = RelayState(agent.session)
        return state

    def forget_closed(self) -> None:
        """Drop the states of tunnels that ended (their calls fail with them)."""
        for relay_id, state in list(self.states.items()):
            if state.tunnel.closed:
                del self.states[relay_id]

    # -- state ---------------------------------------------------------------------------------

    def describe(
        self,
        agent: AgentRecord,
        *,
        wall: float,
        now: float,
        timestamp: Callable[[float], str],
    ) -> dict[str, Any]:
        """The ``relays`` entry of ``agent`` in ``/api/state`` (session ids shortened)."""
        state = self.states.get(agent.id)
        if state is not None and state.tunnel is not agent.session:
            state = None
        sessions = []
        if state is not None:
            for session in sorted(state.sessions.values(), key=lambda s: s.created_at):
                sessions.append(
                    {
                        "id_prefix": session.id[:SESSION_PREFIX],
                        "created_at": timestamp(session.created_at),
                        "last_used": timestamp(wall - (now - session.last_used)),
                        "inflight": sum(1 for c in session.calls if c.is_request),
                        "streams": sum(1 for c in session.calls if c.stream),
                    }
                )
        return {
            "id": agent.id,
            "name": agent.name,
            "transport": agent.options.get("transport", ""),
            "auth": "passthrough"
            if agent.options.get("auth_passthrough") == "true"
            else "token"
            if agent.options.get("auth_token_sha256")
            else "server",
            "inflight": state.requests if state is not None else 0,
            "streams": state.streams if state is not None else 0,
            "sessions_count": len(sessions),
            "sessions": sessions,
        }
