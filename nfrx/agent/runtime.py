"""The agent process: dial the server, handshake, serve streams, reconnect, drain on signals.

Task tree (one owner each)::

    AgentRuntime.run
    +-- status/control API (STATUS_ADDR) and /metrics (METRICS_PORT), when configured: bound
    |   before dialling, stopped (1 s grace for responses in progress) after the rest ends
    +-- signal watcher: 1st SIGTERM/SIGINT -> drain and exit, 2nd -> stop now
    +-- exit drainer (after a first signal or /control/shutdown)
    +-- backend poller: re-reads the backend's models and pushes Status frames on change
    +-- seed loop: dials SERVER_URL whenever no tunnel is live, with the reconnect schedule
    |   +-- TunnelSession.run (reader, writer, heartbeat, one handler task per request)
    +-- Instances.run (several instances, see nfrx.agent.instances): the load reporter and one
        member loop per instance of the gateway, each dialling that instance's own URL
        +-- TunnelSession.run

A server that runs alone lists no instances: the seed's one tunnel is all there is, as it always
was. Every tunnel shares the one ``MAX_CONCURRENCY``: a stream beyond it is reset as
``overloaded`` at once (the instance that sent it requeues the request).

Draining: ``/control/drain`` stops new work without exiting (``/control/undrain`` undoes it); a
signal or ``/control/shutdown`` drains *and exits*, and cannot be undone.

Backend health: the agent stays connected whatever its backend does. A backend that does not answer
its probe makes the agent ``not_ready`` with zero capacity; it keeps announcing its last known
models, so the server queues requests for them instead of answering 404. The poller probes every
``poll_interval`` while the backend is ready, every :data:`NOT_READY_POLL_INTERVAL` at most while it
is not, and at once when a request suggests the backend is unwell (unreachable, a 5xx answer, a
connection that broke).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from nfrx._version import __version__
from nfrx.agent import backoff, status
from nfrx.agent.instances import Instances, Tunnel, connect_url
from nfrx.agent.metrics import AgentMetrics, create_metrics_app
from nfrx.agent.proxy import Outcome
from nfrx.config.model import default_client_id, default_client_name
from nfrx.exception_groups import leaves
from nfrx.protocol import (
    PROTOCOL_VERSION,
    Drain,
    Frame,
    Goodbye,
    Hello,
    Members,
    ResetCode,
    Status,
)
from nfrx.redact import redact
from nfrx.transport import websocket_agent
from nfrx.transport.errors import HandshakeFailed, HandshakeRefused, TransportClosed
from nfrx.transport.handshake import agent_handshake
from nfrx.transport.session import TunnelSession, TunnelSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.config.model import AgentConfig
    from nfrx.transport.streams import IncomingStream

log = logging.getLogger("nfrx.agent")

FATAL_REFUSALS = frozenset(
    {"unsupported_version", "wrong_kind", "missing_id", "over_limit", "http_401"}
)
"""Refusals that retrying cannot fix: the agent exits even with --reconnect (``over_limit``: it
announces more models, or longer names, than the server accepts; see AGENT_MAX_MODELS)."""

GOODBYE_GRACE = 5.0
"""Seconds a drained agent waits for the server to close the tunnel after its Goodbye."""

NOT_READY_POLL_INTERVAL = 2.0
"""Longest wait between probes of a backend that is not ready, so its recovery shows quickly."""


class BackendUnavailable(Exception):
    """The local service did not answer its probe; the message says how."""


class BackendStarting(BackendUnavailable):
    """The local service is not ready yet because it is starting, as it should: logged at INFO,
    not as a failure (a backend the agent starts itself, e.g. a stdio MCP provider)."""


@attrs.frozen
class BackendState:
    """What the last successful probe found (kept while the backend is not ready)."""

    models: tuple[str, ...] = ()
    embedding_batch_size: int = 0
    """Most embedding inputs the agent wants per backend call (0: no limit)."""


class Backend(Protocol):
    """What a plugin's agent side provides to the runtime."""

    kind: str
    poll_interval: float
    """Seconds between probes while the backend is ready."""

    # A backend may also define ``hello_options``: (name, value) pairs sent in its Hello
    # (see :attr:`nfrx.protocol.frames.Hello.options`), and ``describe(agent_id) -> str``: what
    # it serves, in words, for the agent's log lines (a backend without models, which would
    # otherwise be described as serving "0 model(s)").

    async def probe(self) -> BackendState:
        """Ask the local service what it serves; raises :class:`BackendUnavailable`."""
        ...

    async def handle(self, stream: IncomingStream) -> Outcome:
        """Serve one request (runs inside the stream's cancel scope).

        A suspect outcome (:attr:`~nfrx.agent.proxy.Outcome.suspect`) makes the runtime probe
        the backend at once.
        """
        ...


class AgentExit(Exception):
    """The agent stops for a reason the operator must see (one line) and a non-zero status.

    The CLI prints the message as is: its URLs are redacted here (:func:`nfrx.redact.redact`).
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(redact(message))
        self.code = code


SERVICE_GRACE = 1.0
"""Seconds the status and metrics servers get to finish responses once the agent is done (the
answer to /control/shutdown is one of them)."""


class AgentRuntime:
    def __init__(self, config: AgentConfig, backend: Backend, *, backend_url: str = "") -> None:
        self.config = config
        self.backend = backend
        self.backend_url = backend_url
        """Shown by /status (the runtime itself never uses it)."""
        self.agent_id = config.client_id or default_client_id()
        self.name = config.client_name or default_client_name()
        self.instances = Instances(config.max_concurrency)
        """The tunnels, one per instance of the gateway, and the slots they share."""
        self.state = BackendState()
        self.backend_ready = False
        self.draining = False
        """No new requests (a control drain, or the drain before exiting)."""
        self.exiting = False
        """A signal or /control/shutdown started the drain that ends the process."""
        self.last_error = ""
        """The latest reason the tunnel or the backend failed (kept after recovery)."""
        self.metrics = AgentMetrics(self)
        self._nursery: trio.Nursery | None = None
        self._services_stop = trio.Event()
        self._stopping = False
        self._inflight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._probed = False
        self._starting = False
        """The latest probe found the backend starting (:class:`BackendStarting`)."""
        self._probe_wanted = trio.Event()

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped by a signal or /control/shutdown (returns) or a fatal condition,
        an unusable STATUS_ADDR or METRICS_PORT included (raises AgentExit)."""
        failure: AgentExit | None = None
        async with trio.open_nursery() as services:
            try:
                await self._start_services(services)
            except AgentExit as exc:
                failure = exc
            else:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._watch_signals, nursery)
                    task_status.started()
                    try:
                        await self._run_tunnels()
                    except* AgentExit as group:
                        # Raised past the nursery it would arrive wrapped in an exception group;
                        # the CLI wants the one reason to print.
                        failure = _first_exit(group)
                    nursery.cancel_scope.cancel()
                self._nursery = None
            self._services_stop.set()
            services.cancel_scope.deadline = trio.current_time() + SERVICE_GRACE
        if failure is not None:
            raise failure

    async def _start_services(self, nursery: trio.Nursery) -> None:
        """Bind the status/control API and the metrics endpoint when configured.

        Raises AgentExit (one line) for an unusable address, port or token file.
        """
        stop = self._services_stop.wait
        if self.config.status_addr:
            try:
                host, port = status.parse_address(self.config.status_addr)
            except ValueError as exc:
                raise AgentExit(f"configuration error: {exc}", 2) from exc
            token_file = status.token_path(self.config.config_file)
            try:
                token = status.load_or_create_token(token_file)
            except OSError as exc:
                raise AgentExit(f"cannot use the control token file {token_file}: {exc}") from exc
            app = status.create_status_app(self, token, host)
            binds = await self._bind(nursery, "STATUS_ADDR", app, host, port, stop)
            log.info("status API on %s (control token in %s)", ", ".join(binds), token_file)
        if self.config.metrics_port:
            app = create_metrics_app(self.metrics)
            binds = await self._bind(
                nursery, "METRICS_PORT", app, "127.0.0.1", self.config.metrics_port, stop
            )
            log.info("metrics on %s/metrics", ", ".join(binds))

    @staticmethod
    async def _bind(
        nursery: trio.Nursery,
        setting: str,
        app: object,
        host: str,
        port: int,
        stop: Callable[[], Awaitable[None]],
    ) -> list[str]:
        try:
            binds: list[str] = await nursery.start(status.serve_local, app, host, port, stop)
        except* OSError as group:
            reasons = "; ".join(str(exc) for exc in leaves(group))
            raise AgentExit(f"{setting}: cannot listen on {host}:{port}: {reasons}") from group
        return binds

    # -- state ---------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Requests being served now."""
        return self._inflight

    @property
    def connected(self) -> bool:
        """True while at least one tunnel is live."""
        return self.instances.any_live

    @property
    def state_name(self) -> str:
        """``draining``, ``disconnected``, ``not_ready`` or ``connected`` (first that applies)."""
        if self.draining:
            return "draining"
        if not self.connected:
            return "disconnected"
        return "connected" if self.backend_ready else "not_ready"

    async def _run_tunnels(self) -> None:
        """The backend poller, the seed loop and the member loops (see the module docstring);
        returns when the seed loop does."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.instances.run, self._member_loop)
            nursery.start_soon(self._poll_backend, self._broadcast)
            await self._connect_loop()
            nursery.cancel_scope.cancel()

    async def _connect_loop(self) -> None:
        """The seed: dial SERVER_URL, and again whenever no tunnel is live (without
        --reconnect, the agent exits then instead)."""
        attempt = 0
        while not self._stopping:
            established = False
            try:
                established, reason = await self._session_once(self.config.server_url)
            except HandshakeRefused as exc:
                reason = f"the server refused this agent: {exc}"
                if exc.code in FATAL_REFUSALS:
                    raise AgentExit(reason, 2) from exc
            except HandshakeFailed as exc:
                reason = str(exc)
            if self._stopping or self.exiting:
                return
            self.last_error = reason
            if established:
                attempt = 0
            while self.instances.any_live and not self._stopping:
                await self.instances.wait_changed()  # the other tunnels carry on meanwhile
            if self._stopping or self.exiting:
                return
            if not self.config.reconnect:
                raise AgentExit(f"{reason} (use --reconnect to keep retrying)")
            wait = backoff.delay(attempt)
            attempt += 1
            log.warning("%s; reconnecting in %g s", reason, wait)
            await trio.sleep(wait)

    async def _member_loop(self, instance_id: str, base_url: str) -> None:
        """Keep a tunnel to the instance ``instance_id`` (advertised at ``base_url``) while some
        live tunnel lists it; the seed's tunnel counts when it reached that instance."""
        url = connect_url(base_url, self.backend.kind)
        attempt = 0
        while not self._stopping and self.instances.wanted(instance_id):
            tunnel = self.instances.tunnels.get(instance_id)
            if tunnel is not None and tunnel.session is not None and tunnel.live:
                await tunnel.session.finished.wait()
                continue
            try:
                established, reason = await self._session_once(url, expected=instance_id)
            except HandshakeRefused as exc:
                reason = f"instance {instance_id} refused this agent: {exc}"
                if exc.code in FATAL_REFUSALS:
                    raise AgentExit(reason, 2) from exc
                established = False
            except HandshakeFailed as exc:
                reason, established = f"instance {instance_id}: {exc}", False
            if self._stopping or self.exiting or not self.instances.wanted(instance_id):
                return
            if established:
                attempt = 0
            wait = backoff.delay(attempt)
            attempt += 1
            log.warning("%s; redialling it in %g s", reason, wait)
            await trio.sleep(wait)

    def _hello(self) -> Hello:
        status = self._status()
        return Hello(
            version=PROTOCOL_VERSION,
            kind=self.backend.kind,
            agent_id=self.agent_id,
            name=self.name,
            agent_version=__version__,
            window=TunnelSettings().window,
            models=status.models,
            max_concurrency=status.max_concurrency,
            status=status.status,
            embedding_batch_size=status.embedding_batch_size,
            options=tuple(getattr(self.backend, "hello_options", ())),
        )

    async def _session_once(self, url: str, *, expected: str | None = None) -> tuple[bool, str]:
        """Dial ``url``, handshake and run the tunnel until it ends; (established, why it ended).

        The seed (``expected`` None) probes the backend first, as every fresh start should; a
        member loop's dial to the instance ``expected`` does not (the poller keeps the state).
        """
        if expected is None:
            await self._probe_backend()
        announced = self._status()
        hello = self._hello()
        headers = []
        if self.config.client_key:
            headers.append((b"authorization", f"Bearer {self.config.client_key}".encode()))
        ssl_context = websocket_agent.tls_context(url, self.config.ca_file)
        async with websocket_agent.connect(url, headers=headers, ssl_context=ssl_context) as ws:
            conn, welcome = await agent_handshake(ws, hello, timeout=10)
            settings = TunnelSettings(
                heartbeat_interval=welcome.heartbeat_interval, dead_after=welcome.dead_after
            )
            holder: list[Tunnel] = []
            session = TunnelSession(
                ws,
                conn,
                settings,
                handler=lambda stream: self._serve(holder[0], stream),
                on_frame=lambda frame: self._on_frame(holder[0], frame),
                name="tunnel" if not welcome.instance_id else f"tunnel {welcome.instance_id}",
            )
            tunnel = self.instances.attach(welcome.instance_id, session, welcome.members)
            if tunnel is None:
                # Another tunnel to that instance got there first (the seed and a member loop
                # raced): this one is not needed; the server closes it on the Goodbye.
                with contextlib.suppress(TransportClosed):
                    await ws.send_message(conn.send(Goodbye(reason="already connected")))
                return False, f"already connected to instance {welcome.instance_id}"
            holder.append(tunnel)
            session.accepting = not self.draining
            where = url if not welcome.instance_id else f"{url} (instance {welcome.instance_id})"
            log.info(
                "connected to %s as %s (%s): %s, %s",
                where,
                self.name,
                self.agent_id,
                hello.status,
                self.offer(hello.models),
            )
            try:
                if self._status() != announced:
                    session.send_control(self._status())  # it changed during the handshake
                await session.run()
            finally:
                self.instances.detach(tunnel)
        return True, f"tunnel to {url} closed: {session.closed_reason}"

    # -- requests ------------------------------------------------------------------------------

    async def _serve(self, tunnel: Tunnel, stream: IncomingStream) -> None:
        """One stream of ``tunnel``: refused as ``overloaded`` when it needs a slot and all are
        taken (by any tunnel), else served."""
        if not stream.request.slot:
            await self._handle(stream)
            return
        if not self.instances.take(tunnel):
            stream.reset(ResetCode.OVERLOADED, "every slot of this agent is taken")
            return
        try:
            await self._handle(stream)
        finally:
            self.instances.give_back(tunnel)

    async def _handle(self, stream: IncomingStream) -> None:
        self._inflight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self.metrics.job_started()
        started = trio.current_time()
        outcome: Outcome | None = None  # None: cancelled or crashed
        try:
            outcome = await self.backend.handle(stream)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
            self.metrics.job_finished(
                succeeded=outcome is Outcome.ANSWERED, seconds=trio.current_time() - started
            )
        if outcome.suspect:
            request = stream.request
            log.debug("%s %s: %s; probing the backend now", request.method, request.path, outcome)
            self.probe_soon()

    def _on_frame(self, tunnel: Tunnel, frame: Frame) -> None:
        if isinstance(frame, Members):
            self.instances.listed(tunnel, frame.members)
        elif isinstance(frame, Drain):
            log.info("the server is draining (%s); its tunnel will close soon", frame.reason)
        elif isinstance(frame, Goodbye):
            log.info("the server said goodbye: %s", frame.reason)

    # -- backend state -------------------------------------------------------------------------

    def _status(self) -> Status:
        """What the server should know about this agent now.

        Not ready or draining means zero capacity; the models are the last known ones either
        way, so the server can hold requests for them until the backend is back.
        """
        if self.draining:
            status = "draining"
        elif self.backend_ready:
            status = "ready"
        else:
            status = "not_ready"
        return Status(
            models=self.state.models,
            max_concurrency=self.config.max_concurrency if status == "ready" else 0,
            status=status,
            embedding_batch_size=self.state.embedding_batch_size,
        )

    async def _probe_backend(self) -> bool:
        """Refresh the backend's state; True if anything the server sees changed.

        A failed probe keeps the last known state and only marks the backend not ready.
        """
        before = (self.backend_ready, self.state)
        try:
            state = await self.backend.probe()
        except BackendUnavailable as exc:
            self._note_unavailable(exc)
            self.backend_ready = False
        else:
            self._starting = False
            if not self.backend_ready:
                log.info("backend ready: %s", self.offer(state.models))
            elif state.models != self.state.models:
                log.info("backend models changed: %d model(s)", len(state.models))
            self.state = state
            self.backend_ready = True
        self._probed = True
        return (self.backend_ready, self.state) != before

    def _note_unavailable(self, exc: BackendUnavailable) -> None:
        """Log a failed probe: a backend that is starting at INFO, a failure at WARNING (once
        per change: the probes that follow find the same, at DEBUG)."""
        was_starting, self._starting = self._starting, isinstance(exc, BackendStarting)
        news = self.backend_ready or not self._probed or was_starting != self._starting
        if self._starting:
            if news:
                log.info("backend starting: %s", exc)
            return
        self.last_error = f"backend not ready: {exc}"
        if news:
            log.warning(
                "backend not ready: %s (probing it every %g s)", exc, self._poll_interval(False)
            )
        else:
            log.debug("backend still not ready: %s", exc)

    def offer(self, models: tuple[str, ...]) -> str:
        """What this agent serves, for its log lines: the backend's own words if it has them
        (``describe``, for kinds without models), else the count of ``models``."""
        describe: Callable[[str], str] | None = getattr(self.backend, "describe", None)
        if describe is not None:
            return describe(self.agent_id)
        return f"{len(models)} model(s)"

    def probe_soon(self) -> None:
        """Have the backend poller probe now (or right after the probe it is running)."""
        self._probe_wanted.set()

    def _poll_interval(self, ready: bool) -> float:
        interval = self.backend.poll_interval
        return interval if ready else min(interval, NOT_READY_POLL_INTERVAL)

    def _broadcast(self, status: Status) -> None:
        """Send ``status`` on every live tunnel."""
        for session in self.instances.live_sessions():
            session.send_control(status)

    def _publish_status(self) -> None:
        """Tell every instance (connected ones) whether this agent takes requests, and apply
        it."""
        for session in self.instances.live_sessions():
            session.accepting = not self.draining
        self._broadcast(self._status())

    async def _poll_backend(self, publish: Callable[[Status], None]) -> None:
        """Probe the backend when its interval passes or :meth:`probe_soon` asks, and publish a
        Status when what the server sees changed. Runs for the life of one tunnel."""
        while True:
            with trio.move_on_after(self._poll_interval(self.backend_ready)):
                await self._probe_wanted.wait()
            # A new event before probing: a request made during the probe gets a probe of its
            # own (the failure it reports may postdate this probe's answer).
            self._probe_wanted = trio.Event()
            if await self._probe_backend():
                publish(self._status())

    # -- signals and drain ---------------------------------------------------------------------

    def drain(self, reason: str) -> bool:
        """Take no new requests but keep running (until :meth:`undrain`); False if already
        draining. In-flight requests continue."""
        if self.draining:
            return False
        self.draining = True
        log.info(
            "%s: draining; %d request(s) in flight; no new ones until undrained",
            reason,
            self._inflight,
        )
        self._publish_status()
        return True

    def undrain(self, reason: str) -> bool:
        """Take requests again after :meth:`drain`; False (nothing changes) while exiting."""
        if self.exiting:
            return False
        if self.draining:
            self.draining = False
            log.info("%s: taking requests again", reason)
            self._publish_status()
        return True

    def shutdown(self, reason: str) -> bool:
        """Drain and exit, exactly like a first SIGTERM; False if already exiting."""
        if self.exiting or self._nursery is None:
            return False
        self.exiting = self.draining = True
        self._nursery.start_soon(self._drain, reason, self._nursery.cancel_scope)
        return True

    async def _watch_signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.exiting:
                    log.warning("%s again: exiting now", name)
                    self._stopping = True
                    nursery.cancel_scope.cancel()
                    return
                self.shutdown(name)

    async def _drain(self, reason: str, cancel_scope: trio.CancelScope) -> None:
        """Stop taking requests, let in-flight ones finish (up to DRAIN_TIMEOUT), then stop."""
        timeout = self.config.drain_timeout
        log.info(
            "%s: draining; %d request(s) in flight, waiting up to %s",
            reason,
            self._inflight,
            "forever" if timeout < 0 else f"{timeout:g} s",
        )
        self._publish_status()
        with trio.move_on_after(math.inf if timeout < 0 else timeout) as scope:
            await self._idle.wait()
        if scope.cancelled_caught:
            log.warning("drain timeout: abandoning %d request(s)", self._inflight)
        self._stopping = True
        sessions = self.instances.live_sessions()
        if sessions:
            # Say goodbye and let each server close its tunnel: it reads frames in order, so by
            # then it has relayed every byte sent before. Closing from this side could make the
            # server's web framework drop messages still queued when the close arrives. Closing
            # the sessions (not cancelling the tree) lets the connect loops return by themselves.
            for session in sessions:
                session.send_control(Goodbye(reason="agent drained"))
            with trio.move_on_after(GOODBYE_GRACE):
                for session in sessions:
                    await session.finished.wait()
            for session in sessions:
                await session.flush_and_close("agent drained")
        else:
            cancel_scope.cancel()


def _first_exit(group: BaseExceptionGroup[AgentExit]) -> AgentExit:
    """The reason to print when the tunnels' loops raised AgentExit (several tunnels may be
    refused for the same reason at once: one line is enough)."""
    first = leaves(group)[0]
    assert isinstance(first, AgentExit)
    return first
