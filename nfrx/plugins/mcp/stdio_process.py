"""One stdio MCP provider process and the routing of what it writes.

A :class:`Child` owns a process started from the agent's own configuration (never from anything a
client sent), a writer task that is the only writer of its stdin (so a cancelled request can never
leave half a line in the pipe), a reader of its stdout that splits lines and routes each message,
and a reader of its stderr that logs each line as the provider's own logging.

Routing (reference ``mcp.md`` section 6, "What the relay must do", item 3): a response goes to its
request's exchange (its id restored to the client's exact JSON text); ``notifications/progress``
to the request that owns the progress token; a message tagged with a ``subscriptionId`` or a
``notifications/cancelled`` for a ``subscriptions/listen`` to that listen; any other request or
notification to the only request in flight, else to the session's GET stream, else to the most
recent request (in shared mode, where requests belong to different clients, an ambiguous message
is dropped instead of guessed). Anything for an id or token that is no longer in flight (a
retired, cancelled or finished request) is dropped.

Ending: :meth:`Child.stop` (or cancelling :meth:`Child.run`) closes stdin, waits
:data:`CLOSE_GRACE`, sends SIGTERM to the process group, waits :data:`TERM_GRACE`, then SIGKILL;
bounded and shielded. Exchanges still in flight then see their channel close with
:attr:`Call.end` = ``"exited"``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import subprocess
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from nfrx.plugins.mcp import splice

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger("nfrx.mcp.stdio")

MAX_LINE: Final = 10 * 1024 * 1024
"""Longest line a provider may write; a longer one kills the process (its framing is lost)."""
STDERR_LINE: Final = 64 * 1024
"""stderr is logged in pieces of at most this many bytes."""
CLOSE_GRACE: Final = 2.0
TERM_GRACE: Final = 2.0
EXIT_DRAIN: Final = 1.0
"""Seconds to wait, after stdout ends, for the process to exit and its stderr to end."""
OUTBOX: Final = 64
"""Lines queued for the writer task before writers wait (backpressure on clients)."""
READ_CHUNK: Final = 64 * 1024

SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
ID: Final = ("id",)
TOKEN: Final = ("params", "_meta", "progressToken")
REQUEST_ID: Final = ("params", "requestId")
PROGRESS: Final = ("params", "progressToken")
"""Where ``notifications/progress`` carries the token (a request has it under ``_meta``)."""
SUBSCRIPTION: Final = ("params", "_meta", SUBSCRIPTION_ID)


class SpawnFailed(Exception):
    """The provider command could not be started; the message says why."""


@attrs.frozen
class Delivery:
    """A message for one exchange, ready for the client (ids already restored)."""

    body: bytes
    final: bool = False
    """The response to the exchange's request: nothing follows it."""


@attrs.define(eq=False)
class Call:
    """A client request in flight at a child (or the GET stream, with ``upstream_id`` empty)."""

    client_id: str
    """JSON text of the client's id (restored verbatim into the response)."""
    upstream_id: str
    """The id the process saw (``nfrx-<n>``, always a string)."""
    method: str
    channel: trio.MemorySendChannel[Delivery]
    idle: float = math.inf
    """Seconds of provider silence after which the exchange gives up."""
    client_token: str | None = None
    upstream_token: str | None = None
    started: float = attrs.field(factory=trio.current_time)
    deadline: float = math.inf
    end: str = ""
    """Why the channel closed early: ``exited`` (the process is gone) or ``cancelled``."""

    def __attrs_post_init__(self) -> None:
        self.bump()

    def bump(self) -> None:
        """Provider activity for this request: push its inactivity deadline back."""
        self.deadline = trio.current_time() + self.idle


def build_env(entries: Sequence[str], base: Mapping[str, str]) -> dict[str, str]:
    """The provider's environment: PATH, HOME, LANG and TMPDIR from ``base`` (when set), then
    each entry: ``KEY`` passes ``base[KEY]`` (if set), ``KEY=value`` sets it."""
    env = {key: base[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in base}
    for entry in entries:
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not key:
            continue
        if sep:
            env[key] = value
        elif key in base:
            env[key] = base[key]
    return env


class Child:
    """One provider process (a legacy session's, the warm spare, or the shared modern one)."""

    _ids = itertools.count(1)

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        *,
        shared: bool = False,
    ) -> None:
        self.argv = tuple(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.shared = shared
        self.number = next(self._ids)
        self.session_id = ""
        self.pid = 0
        self.calls: dict[str, Call] = {}
        """In-flight requests by the id the process saw."""
        self.by_client: dict[str, Call] = {}
        """The same, by the client's id (legacy sessions only: ids are unique per client)."""
        self.tokens: dict[str, Call] = {}
        self.server_requests: dict[str, Call | None] = {}
        """Requests the process sent (id JSON text) and the exchange that carried them."""
        self.listener: trio.MemorySendChannel[Delivery] | None = None
        """The session's GET stream, when one is open."""
        self.active = 0
        """Exchanges being served now (the idle reaper leaves the child alone meanwhile)."""
        self.last_used = trio.current_time()
        self.started = trio.Event()
        self.exited = trio.Event()
        self.exit_reason = ""
        self.last_stderr = ""
        self.stopping = False
        self._scope = trio.CancelScope()
        self._outbox_send, self._outbox = trio.open_memory_channel[bytes](OUTBOX)

    @property
    def label(self) -> str:
        if self.shared:
            return "shared"
        return f"session {self.session_id[:8]}" if self.session_id else "spare"

    @property
    def alive(self) -> bool:
        return self.started.is_set() and not self.exited.is_set() and not self.stopping

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the process and serve it until it exits or :meth:`stop` (or cancellation).

        Raises :class:`SpawnFailed` (before ``started``) if the command cannot be executed.
        """
        try:
            process = await trio.lowlevel.open_process(
                list(self.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own group: a Ctrl-C to the agent is ours to relay
            )
        except OSError as exc:
            self.exit_reason = f"cannot start {self.argv[0]}: {exc.strerror or exc}"
            self.exited.set()
            raise SpawnFailed(self.exit_reason) from exc
        self.pid = process.pid
        log.info("started provider pid %d (%s): %s", self.pid, self.label, " ".join(self.argv))
        self.started.set()
        task_status.started()
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    stderr_done = trio.Event()
                    assert process.stdin is not None
                    assert process.stdout is not None
                    assert process.stderr is not None
                    nursery.start_soon(self._write_stdin, process.stdin)
                    nursery.start_soon(self._read_stderr, process.stderr, stderr_done)
                    await self._read_stdout(process.stdout)
                    with trio.move_on_after(EXIT_DRAIN):
                        await process.wait()
                        await stderr_done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            self.stopping = True
            self._end_calls("exited")
            with trio.CancelScope(shield=True):
                code = await _terminate(process)
            if not self.exit_reason:
                self.exit_reason = f"the provider exited with status {code}"
                if self.last_stderr:
                    self.exit_reason += f" ({self.last_stderr})"
            log.info("provider pid %d (%s) exited with status %s", self.pid, self.label, code)
            self.exited.set()

    def stop(self, reason: str) -> None:
        """End the process (bounded; :meth:`run` does the shutdown). Never blocks."""
        if not self.stopping:
            log.info("stopping provider pid %d (%s): %s", self.pid, self.label, reason)
            self.exit_reason = self.exit_reason or reason
        self.stopping = True
        self._scope.cancel()

    def _end_calls(self, why: str) -> None:
        for call in list(self.calls.values()):
            call.end = call.end or why
            call.channel.close()
        self.calls.clear()
        self.by_client.clear()
        self.tokens.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self._outbox_send.close()

    # -- writing -------------------------------------------------------------------------------

    async def write(self, line: bytes) -> bool:
        """Queue one message for stdin (newlines replaced: valid JSON has none in strings).

        Returns False if the process is gone (the line is dropped).
        """
        message = line.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"
        try:
            await self._outbox_send.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    async def _write_stdin(self, stdin: trio.abc.SendStream) -> None:
        async with self._outbox:
            async for line in self._outbox:
                try:
                    await stdin.send_all(line)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.debug("provider pid %d closed its stdin", self.pid)
                    return

    # -- reading -------------------------------------------------------------------------------

    async def _read_stderr(self, stderr: trio.abc.ReceiveStream, done: trio.Event) -> None:
        buffer = bytearray()
        try:
            while chunk := await stderr.receive_some(READ_CHUNK):
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0 or len(buffer) >= STDERR_LINE:
                    cut = end if 0 <= end < STDERR_LINE else STDERR_LINE
                    self._log_stderr(bytes(buffer[:cut]))
                    del buffer[: cut + (1 if cut == end else 0)]
            if buffer:
                self._log_stderr(bytes(buffer))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            done.set()

    def _log_stderr(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if text:
            self.last_stderr = text[:200]
            log.info("provider pid %d: %s", self.pid, text)

    async def _read_stdout(self, stdout: trio.abc.ReceiveStream) -> None:
        """Split stdout into lines and route each, until EOF or an oversized line."""
        buffer = bytearray()
        scanned = 0
        while True:
            try:
                chunk = await stdout.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                if buffer.strip():
                    await self._on_line(bytes(buffer))
                return
            buffer += chunk
            while (end := buffer.find(b"\n", scanned)) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                scanned = 0
                await self._on_line(line)
            scanned = len(buffer)
            if scanned > MAX_LINE:
                self.exit_reason = f"the provider wrote a line longer than {MAX_LINE} bytes"
                log.error(
                    "provider pid %d (%s): %s; stopping it", self.pid, self.label, self.exit_reason
                )
                return

    async def _on_line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            log.warning("provider pid %d wrote a line that is not JSON: %.200r", self.pid, line)
            return
        if not isinstance(message, dict):
            log.warning("provider pid %d wrote a non-object message: %.200r", self.pid, line)
            return
        target, body, final = self._route(message, line)
        if target is None:
            log.debug("provider pid %d: dropped %.200r", self.pid, line)
            return
        try:
            await target.send(Delivery(body, final=final))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("provider pid %d: the exchange left; dropped %.200r", self.pid, line)

    def _route(
        self, message: dict[str, Any], line: bytes
    ) -> tuple[trio.MemorySendChannel[Delivery] | None, bytes, bool]:
        """Where a message goes, its bytes for the client, and whether it ends the exchange."""
        method = message.get("method")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if not isinstance(method, str):  # a response
            upstream = message.get("id")
            call = self.calls.get(upstream) if isinstance(upstream, str) else None
            if call is None:
                return None, line, False
            self._forget(call)
            return call.channel, _restore(line, {ID: call.client_id}), True
        if "id" in message:  # a request from the provider (sampling, elicitation, roots, ping)
            owner = self._unscoped()
            self.server_requests[json.dumps(message["id"])] = owner
            return _channel(owner, self.listener, self.shared), line, False
        meta = params.get("_meta")
        meta = meta if isinstance(meta, dict) else {}
        if method == "notifications/progress":
            token = params.get("progressToken")
            call = self.tokens.get(token) if isinstance(token, str) else None
            if call is None or call.client_token is None:
                return None, line, False
            return call.channel, _restore(line, {PROGRESS: call.client_token}), False
        subscription = meta.get(SUBSCRIPTION_ID)
        if isinstance(subscription, str) and subscription in self.calls:
            call = self.calls[subscription]
            return call.channel, _restore(line, {SUBSCRIPTION: call.client_id}), False
        if method == "notifications/cancelled":
            target = params.get("requestId")
            call = self.calls.get(target) if isinstance(target, str) else None
            if call is None:
                return None, line, False  # about a request we no longer track
            self._forget(call)  # the provider ended it (a listen teardown)
            return call.channel, _restore(line, {REQUEST_ID: call.client_id}), True
        return _channel(self._unscoped(), self.listener, self.shared), line, False

    def _unscoped(self) -> Call | None:
        """The request an untagged message most plausibly belongs to (section 6, item 3)."""
        calls = [call for call in self.calls.values() if call.method]
        if len(calls) == 1:
            return calls[0]
        if self.listener is not None or self.shared or not calls:
            return None
        return max(calls, key=lambda call: call.started)

    # -- the routing table ---------------------------------------------------------------------

    def register(self, call: Call) -> None:
        self.calls[call.upstream_id] = call
        if not self.shared:
            self.by_client[call.client_id] = call
        if call.upstream_token is not None:
            self.tokens[call.upstream_token] = call

    def retire(self, call: Call) -> bool:
        """Stop routing to ``call``; True if it was still waiting for its response."""
        if self.calls.get(call.upstream_id) is not call:
            return False
        self._forget(call)
        return True

    def _forget(self, call: Call) -> None:
        self.calls.pop(call.upstream_id, None)
        if self.by_client.get(call.client_id) is call:
            del self.by_client[call.client_id]
        if call.upstream_token is not None:
            self.tokens.pop(call.upstream_token, None)
        for key, owner in list(self.server_requests.items()):
            if owner is call:
                self.server_requests[key] = None


def _channel(
    call: Call | None, listener: trio.MemorySendChannel[Delivery] | None, shared: bool
) -> trio.MemorySendChannel[Delivery] | None:
    if call is not None:
        return call.channel
    return None if shared else listener


def _restore(line: bytes, values: Mapping[splice.Path, str]) -> bytes:
    """``line`` with the members at ``values``' paths set to the given JSON texts."""
    spans = splice.locate(line, values.keys())
    return splice.splice(line, {span: values[path].encode() for path, span in spans.items()})


async def _terminate(process: trio.Process) -> int | None:
    """Close stdin, wait, SIGTERM the group, wait, SIGKILL; return the exit status."""
    if process.stdin is not None:
        await process.stdin.aclose()
    for sig, grace in ((None, CLOSE_GRACE), (signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, None)):
        if process.returncode is not None:
            break
        if sig is not None:
            _signal_group(process, sig)
        if grace is None:
            await process.wait()
        else:
            with trio.move_on_after(grace):
                await process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()
    return process.returncode


def _signal_group(process: trio.Process, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
