"""The gateway's view of its fellow instances, as the core and the plugins use it; this module's
:class:`LocalCluster` is the instance that runs alone (no ``REDIS_URL``): every hook is a no-op
or answers from this process, and nothing here imports a Redis client.

:class:`~nfrx.cluster.shared.SharedCluster` overrides the hooks for instances that share a Redis.
The core calls, each at one named place:

=========================== ====================================== ===========================
hook                        called by                              alone
=========================== ====================================== ===========================
``instance_id, members()``  the agent socket's Welcome             ``""``, no members
``run()``                   the runner, once hypercorn listens     returns at once (started)
``drain_started()``         the runner's first signal              nothing
``leave()``                 the runner, once hypercorn stopped     nothing
``health()``                ``/healthz``                           ``{}``
``fleet()``                 ``/api/state`` (pure snapshot)         None
``task_accepted()`` /       the docling routes (async tasks)       nothing / None: the
``task_agent()``                                                   route's own table decides
``session_*()``             the MCP routes and the reaper          nothing / None / False
=========================== ====================================== ===========================

The dispatch queue's hook is its ``order`` (:class:`~nfrx.server.dispatch_queue.QueueOrder`),
which a shared cluster replaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trio

    from nfrx.cluster.directory import Fleet
    from nfrx.protocol import Headers


class LocalCluster:
    """This instance alone (see the module docstring)."""

    instance_id = ""
    """This instance's id ("" alone: the Welcome then names none)."""

    def members(self) -> Headers:
        """The instances agents should keep a tunnel to: (id, advertise URL) pairs."""
        return ()

    @property
    def degraded(self) -> bool:
        """True while the instances cannot reach their shared store: each serves alone."""
        return False

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` adds about the instances."""
        return {}

    def fleet(self) -> Fleet | None:
        """The other instances and their agents, as last read (None alone)."""
        return None

    async def run(self, binds: list[str], *, task_status: trio.TaskStatus[None]) -> None:
        """Join the instances (``binds``: this instance's bound URLs, for its default advertise
        URL) and keep in step with them until cancelled; alone, nothing to do."""
        task_status.started()

    def drain_started(self) -> None:
        """This instance drains: its fellows and the agents stop counting on it."""

    async def leave(self) -> None:
        """The server stops: leave the instances now (bounded), while ``run`` still runs."""

    # -- docling async tasks -------------------------------------------------------------------

    def task_accepted(self, task_id: str, agent_id: str) -> None:
        """The docling agent ``agent_id`` accepted the async task ``task_id``."""

    async def task_agent(self, task_id: str) -> str | None:
        """The agent holding a docling task accepted through another instance, if known."""
        return None

    # -- MCP sessions --------------------------------------------------------------------------

    async def session_opened(
        self, relay_id: str, session_id: str, credential: str, protocol_version: str
    ) -> None:
        """An MCP session was created through this instance (shared before its creator hears
        of it, so that its next request may reach any instance)."""

    def session_used(self, relay_id: str, session_id: str) -> None:
        """An MCP session was used through this instance."""

    def session_ended(self, relay_id: str, session_id: str) -> None:
        """An MCP session ended (DELETE, the provider's 404, reaping) through this instance."""

    async def find_session(self, relay_id: str, session_id: str) -> tuple[str, str] | None:
        """(credential hash, protocol version) of a session created through another instance."""
        return None

    async def session_in_use_elsewhere(self, relay_id: str, session_id: str) -> bool:
        """True when another instance used the session within ``MCP_SESSION_IDLE``: reaping
        it here must not end it at the provider."""
        return False
