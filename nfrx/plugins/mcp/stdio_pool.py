"""The stdio provider's processes, supervised (reference ``mcp.md`` section 7.2).

One :class:`ProcessPool` per ``nfrx mcp`` stdio relay owns every provider process (a
:class:`~nfrx.plugins.mcp.stdio_process.Child` each) and decides when one starts and stops:

* **era probe**: at start-up a first process is asked ``server/discover``; if it names a
  2026-07-28 version (:attr:`ProcessPool.modern_versions`), it stays as the one **shared** process
  every modern exchange uses; any other answer, or none within :data:`DISCOVER_TIMEOUT`, means a
  legacy provider and that process is stopped;
* **legacy sessions**: one process each. A warm **spare** is kept started; :meth:`new_session`
  hands it to an ``initialize`` without a session (waiting up to :data:`SPARE_WAIT` for one still
  starting) under a fresh session id, and the next spare starts at once. At most
  ``MCP_STDIO_MAX_PROCESSES`` processes run; a session with nothing in flight for
  ``MCP_SESSION_IDLE`` is stopped;
* **failures**: a command that cannot start, dies at once, or a spare or shared process that
  exits on its own is a failure: :attr:`last_error` says why (the agent reports not ready) and the
  supervisor retries after :data:`RETRY_DELAYS`.

Contract: :meth:`ProcessPool.run` owns every process; cancelling it stops them all (bounded, see
:meth:`Child.stop <nfrx.plugins.mcp.stdio_process.Child.stop>`); nothing else starts one.
:meth:`readiness` is the agent's probe. :meth:`ask` sends a process a request of the bridge's own
and is the only other writer of requests besides the bridge's clients. The command line and the
environment come from the agent's configuration only, never from anything a client sent.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import shutil
from typing import TYPE_CHECKING, Any, Final

import trio

from nfrx.agent.runtime import BackendStarting, BackendState, BackendUnavailable
from nfrx.plugins.mcp import wire
from nfrx.plugins.mcp.stdio_process import Call, Child, Delivery, SpawnFailed, build_env

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nfrx.config.model import McpAgentConfig

log = logging.getLogger("nfrx.mcp.stdio")

DISCOVER_TIMEOUT: Final = 10.0
SPARE_WAIT: Final = 30.0
"""Most seconds an ``initialize`` waits for a spare process that is still starting."""
CANCEL_GRACE: Final = 2.0
"""Most seconds writing ``notifications/cancelled`` for an abandoned request may take."""
CALL_BUFFER: Final = 32
"""Messages queued for one exchange before the process's reader waits for that client."""
RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits between attempts to start a provider that keeps failing."""
DISCOVER_META: Final = {
    "io.modelcontextprotocol/protocolVersion": wire.MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "nfrx", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def provider_argv(config: McpAgentConfig, args: Sequence[str] | None = None) -> list[str]:
    """The command line: ``MCP_STDIO_COMMAND`` (absolute, unless ``MCP_STDIO_ALLOW_RELATIVE``,
    then looked up on PATH) and ``args`` or ``MCP_STDIO_ARGS``. Raises ValueError."""
    command = config.mcp_stdio_command
    if not command:
        raise ValueError("MCP_STDIO_COMMAND is not set")
    if not os.path.isabs(command):
        if not config.mcp_stdio_allow_relative:
            raise ValueError(
                f"MCP_STDIO_COMMAND must be an absolute path, got {command!r} "
                "(set MCP_STDIO_ALLOW_RELATIVE=true to look it up on PATH)"
            )
        found = shutil.which(command)
        if found is None:
            raise ValueError(f"MCP_STDIO_COMMAND {command!r} is not on PATH")
        command = found
    rest = list(args) if args is not None else list(config.mcp_stdio_args)
    return [command, *rest]


class NoProcess(Exception):
    """A new session gets no process; the message says why. ``full``: the process cap is
    reached (retry later), else the provider cannot start."""

    def __init__(self, message: str, *, full: bool) -> None:
        super().__init__(message)
        self.full = full


def cancelled_line(upstream_id: str, reason: str) -> bytes:
    """``notifications/cancelled`` for a request the process saw as ``upstream_id``."""
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": upstream_id, "reason": reason},
        }
    ).encode()


class ProcessPool:
    """Every provider process of one stdio relay (see the module docstring)."""

    def __init__(self, config: McpAgentConfig, args: Sequence[str] | None = None) -> None:
        self.argv = provider_argv(config, args)
        self.env = build_env(config.mcp_stdio_env, os.environ)
        self.cwd = config.mcp_stdio_workdir or None
        self.max_processes = config.mcp_stdio_max_processes
        self.session_idle = config.mcp_session_idle
        self.modern: bool | None = None
        """Whether the provider speaks 2026-07-28 (None until the start-up probe answered)."""
        self.modern_versions: tuple[str, ...] = ()
        """The 2026-07-28-or-later versions the provider's ``server/discover`` named."""
        self.sessions: dict[str, Child] = {}
        self.spare: Child | None = None
        self.shared: Child | None = None
        self.last_error = ""
        self._counter = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._spare_ready = trio.Event()

    def next_number(self) -> int:
        """A number no other request of this relay used (``nfrx-<n>`` ids, ``nfrx-p-<n>``
        progress tokens)."""
        return next(self._counter)

    @property
    def processes(self) -> int:
        """Provider processes alive or starting."""
        children = [*self.sessions.values(), self.spare, self.shared]
        return sum(1 for child in children if child is not None and not child.exited.is_set())

    # -- supervision ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the provider processes: probe the era, keep a warm spare (and the shared modern
        process), reap idle sessions. Started as soon as the supervisor runs; readiness is
        what :meth:`readiness` reports."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._supervise(nursery)
        finally:
            self._nursery = None

    async def _supervise(self, nursery: trio.Nursery) -> None:
        failures = 0
        while True:
            self._wake = trio.Event()
            try:
                self._check_keepers()
                if self.modern is None:
                    await self._discover(nursery)
                if self.modern and self.shared is None:
                    self.shared = await self._spawn(nursery, shared=True)
                if self.spare is None and self.processes < self.max_processes:
                    self.spare = await self._spawn(nursery)
                self.last_error = ""
                failures = 0
            except SpawnFailed as exc:
                self.last_error = str(exc)
                log.warning("stdio provider: %s", exc)
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                self._spare_ready.set()
                await trio.sleep(delay)
                continue
            self._spare_ready.set()
            self._reap()
            with trio.move_on_after(min(self.session_idle / 2, 30.0)):
                await self._wait_for_change()

    def _check_keepers(self) -> None:
        """Forget a spare or shared process that exited on its own (a failure to report)."""
        dead = [c for c in (self.spare, self.shared) if c is not None and c.exited.is_set()]
        if self.spare in dead:
            self.spare = None
        if self.shared in dead:
            self.shared = None
        if dead:
            raise SpawnFailed(dead[0].exit_reason)

    async def _wait_for_change(self) -> None:
        """Until a request wakes the supervisor or a process it keeps (spare, shared) exits."""
        async with trio.open_nursery() as nursery:
            for child in (self.spare, self.shared):
                if child is not None:
                    nursery.start_soon(_cancel_when, child.exited, nursery.cancel_scope)
            await self._wake.wait()
            nursery.cancel_scope.cancel()

    async def _spawn(self, nursery: trio.Nursery, *, shared: bool = False) -> Child:
        child = Child(self.argv, self.env, self.cwd, shared=shared)
        await nursery.start(child.run)
        # A command that dies at once (wrong arguments, missing module) is a failure too.
        with trio.move_on_after(0.2):
            await child.exited.wait()
        if child.exited.is_set():
            raise SpawnFailed(child.exit_reason)
        return child

    async def _discover(self, nursery: trio.Nursery) -> None:
        """Probe the provider's era with ``server/discover`` on a first process: a modern one
        keeps it as the shared process; any other answer (or none) means legacy."""
        child = await self._spawn(nursery)
        result = None
        with trio.move_on_after(DISCOVER_TIMEOUT):
            result = await self.ask(child, "server/discover", {"_meta": DISCOVER_META})
        if child.exited.is_set():
            raise SpawnFailed(child.exit_reason)
        self.modern_versions = _modern_versions(result)
        self.modern = bool(self.modern_versions)
        if self.modern:
            child.shared = True
            self.shared = child
        else:
            child.stop("legacy provider: the discovery process is not reused")
        log.info("the stdio provider speaks the %s protocol", "modern" if self.modern else "legacy")

    def _reap(self) -> None:
        now = trio.current_time()
        for session_id, child in list(self.sessions.items()):
            if child.exited.is_set():
                del self.sessions[session_id]
            elif child.active == 0 and now - child.last_used > self.session_idle:
                child.stop(f"idle for {self.session_idle:g} s")
                del self.sessions[session_id]

    def end_sessions(self, reason: str) -> None:
        """Stop every legacy session's process (e.g. when the tunnel is lost: the server has
        forgotten the sessions, so their clients re-initialize anyway). Never blocks."""
        for child in self.sessions.values():
            child.stop(reason)
        self.sessions.clear()

    # -- what the bridge asks ------------------------------------------------------------------

    async def readiness(self) -> BackendState:
        """Ready while a process can take the next exchange (the spare, or the shared modern
        process); raises :class:`BackendStarting` while that process is starting and
        :class:`BackendUnavailable` with the latest failure otherwise."""
        await trio.lowlevel.checkpoint()
        if self._nursery is None:
            raise BackendUnavailable("the stdio bridge is not running")
        self._reap()
        if self.last_error:
            raise BackendUnavailable(self.last_error)
        keeper = self.shared if self.modern else self.spare
        if keeper is None or not keeper.alive:
            if self.modern is False and self.processes >= self.max_processes:
                return BackendState()  # busy, not broken: new sessions get 503
            raise BackendStarting(f"starting the stdio provider {self.argv[0]}")
        return BackendState()

    def session(self, session_id: str) -> Child | None:
        """The live process of a legacy session (an ended one is forgotten)."""
        child = self.sessions.get(session_id)
        if child is None or not child.alive:
            self.sessions.pop(session_id, None)
            return None
        return child

    async def new_session(self) -> Child:
        """The spare, now the process of a new legacy session (waits up to :data:`SPARE_WAIT`
        for a spare still starting). Raises :class:`NoProcess`."""
        spare = self.spare
        with trio.move_on_after(SPARE_WAIT):
            while spare is None or not spare.alive:
                if self.processes >= self.max_processes or self._nursery is None:
                    raise NoProcess(
                        f"this relay runs at most {self.max_processes} provider processes",
                        full=True,
                    )
                if self.last_error:
                    break
                if self._spare_ready.is_set():
                    self._spare_ready = trio.Event()
                ready = self._spare_ready
                self._wake.set()
                await ready.wait()
                spare = self.spare
        if spare is None or not spare.alive:
            reason = self.last_error or "the provider process did not start in time"
            raise NoProcess(reason, full=False)
        self.spare = None
        self._wake.set()  # start the next spare now
        spare.session_id = secrets.token_urlsafe(24)
        self.sessions[spare.session_id] = spare
        log.info("session %s… runs on provider pid %d", spare.session_id[:8], spare.pid)
        return spare

    async def ask(self, child: Child, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """Send ``child`` a request of the bridge's own; its ``result`` object, or None (an error
        answer, or the process ended). Abandoned (cancelled) before its answer, the process is
        told with ``notifications/cancelled``, like a client's request."""
        upstream = f"nfrx-{self.next_number()}"
        line = json.dumps({"jsonrpc": "2.0", "id": upstream, "method": method, "params": params})
        send, receive = trio.open_memory_channel[Delivery](CALL_BUFFER)
        call = Call(json.dumps(upstream), upstream, method, send)
        child.register(call)
        try:
            async with receive:
                if not await child.write(line.encode()):
                    return None
                async for delivery in receive:
                    if delivery.final:
                        return _result_of(delivery.body)
            return None
        finally:
            if child.retire(call):
                with trio.move_on_after(CANCEL_GRACE, shield=True):
                    await child.write(cancelled_line(upstream, "nfrx: no longer needed"))


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _result_of(answer: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    result = message.get("result") if isinstance(message, dict) else None
    return result if isinstance(result, dict) else None


def _modern_versions(result: dict[str, Any] | None) -> tuple[str, ...]:
    """The 2026-07-28-or-later versions a ``server/discover`` result names (none: legacy)."""
    versions = result.get("supportedVersions") if result is not None else None
    if not isinstance(versions, list):
        return ()
    return tuple(v for v in versions if isinstance(v, str) and wire.era_of(v) == wire.MODERN)
