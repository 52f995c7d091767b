"""``nfrx serve --workers N``: N instances of the gateway on one host, supervised by one parent.

Each worker is a full ``nfrx serve`` process (its own event loop, its own core) and an instance
of the gateway like any other (hence ``REDIS_URL`` is required: the config refuses
``--workers`` above 1 without it). Ports:

* **PORT** is shared: every worker binds it with ``SO_REUSEPORT`` and the kernel spreads the
  clients' connections between them. The parent keeps a socket bound to it (never listening)
  for as long as it runs, so that ``--port 0`` picks one port for all and nobody else takes it.
* **AGENT_PORT + i** is worker i's own (``PORT + 1 + i`` when AGENT_PORT is 0; ephemeral ports
  with ``--port 0``): agents keep a tunnel to every instance, so each worker must be reachable
  on its own address, which it advertises (``ADVERTISE_URL``, if set, with its port replaced by
  the worker's). A firewall must let agents reach those N ports as well as PORT.

The parent hands each worker its settings through the environment (:func:`nfrx.config.load.
environment`: the effective config, flags and file included, so a worker reads no file) and:

* forwards signals: the first SIGTERM/SIGINT drains every worker, a second stops them at once.
  Workers run in a session of their own, so that a terminal's Ctrl-C reaches the parent only
  (the whole process group would get it: each worker would count it and the parent's SIGTERM as
  two signals and stop without draining). Under systemd, ``KillMode=mixed`` for the same reason;
* restarts a worker that exits unexpectedly (after :data:`RESTART_DELAY`; a new instance id);
* never leaves orphans: each worker asks the kernel for SIGTERM when the parent dies
  (``PR_SET_PDEATHSIG``: a ``kill -9`` of the parent drains the workers), and the parent kills
  the workers still running when it stops for any other reason.

The kernel sends that signal when the *thread* that forked the worker ends, not the process, so
workers are forked from the event loop's own thread (:func:`spawn`, a few milliseconds of
blocking in a process that does nothing else): ``trio.lowlevel.open_process`` forks from a
worker thread of trio's cache, which ends after ten idle seconds -- and the workers with it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
from typing import TYPE_CHECKING, Final

import attrs
import trio

from nfrx.config.load import environment
from nfrx.config.server import default_instance_id

if TYPE_CHECKING:
    from nfrx.config.model import ServerConfig

log = logging.getLogger("nfrx.server")

RESTART_DELAY: Final = 1.0
"""Seconds before a worker that exited unexpectedly is started again."""
STOP_GRACE: Final = 10.0
"""Seconds the parent waits, once it stops for a reason other than a signal, before killing
the workers still running."""
_PR_SET_PDEATHSIG: Final = 1


@attrs.define(eq=False)
class WorkerProcess:
    """A running worker: its ``Popen`` and a pidfd that becomes readable when it exits."""

    popen: subprocess.Popen[bytes]
    pidfd: int

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def send_signal(self, signum: int) -> None:
        if self.popen.returncode is None:
            self.popen.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Its exit status, once it exited (reaped here; the pidfd is closed then)."""
        if self.popen.returncode is None:
            await trio.lowlevel.wait_readable(self.pidfd)
            self.popen.wait()  # exited: returns at once
            os.close(self.pidfd)
        return self.popen.returncode


def spawn(env: dict[str, str]) -> WorkerProcess:
    """Start a worker from this (the event loop's) thread: see the module docstring."""
    parent = os.getpid()
    popen = subprocess.Popen(
        [sys.executable, "-m", "nfrx", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: _die_with_parent(parent),
    )
    return WorkerProcess(popen, os.pidfd_open(popen.pid))


@attrs.define(eq=False)
class Worker:
    index: int
    env: dict[str, str]
    process: WorkerProcess | None = None


def reserve(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not listening: it holds the port (an
    ephemeral one for 0) for workers that bind it the same way."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_settings(
    config: ServerConfig, index: int, port: int, agent_port: int, base_id: str
) -> dict[str, str]:
    """The environment of worker ``index`` (see the module docstring)."""
    env = environment(config)
    env.update(
        {
            "CONFIG_FILE": "",
            "WORKERS": "1",
            "PORT": str(port),
            "AGENT_PORT": str(agent_port),
            "REUSE_PORT": "true",
            "INSTANCE_ID": f"{base_id}-{index}",
            "ADVERTISE_URL": _with_port(config.advertise_url, agent_port),
        }
    )
    return env


def _with_port(url: str, port: int) -> str:
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def _die_with_parent(parent: int) -> None:  # pragma: no cover -- in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request: nobody would signal it
        os._exit(1)


async def supervise(config: ServerConfig) -> int:
    """Run ``config.workers`` workers until a signal stops them; the exit status."""
    held = [reserve(config.host, config.port)]
    port = held[0].getsockname()[1]
    agent_ports: list[int] = []
    for index in range(config.workers):
        wanted = config.agent_port + index if config.agent_port else 0
        if not wanted and config.port:
            wanted = config.port + 1 + index
        held.append(reserve(config.host, wanted))
        agent_ports.append(held[-1].getsockname()[1])
    base_id = config.instance_id or default_instance_id()
    workers = [
        Worker(i, worker_settings(config, i, port, agent_ports[i], base_id))
        for i in range(config.workers)
    ]
    log.info(
        "nfrx serve: %d workers on port %d (agents: ports %s)",
        config.workers,
        port,
        ", ".join(map(str, agent_ports)),
    )
    stopping = False

    async def keep(worker: Worker) -> None:
        """Run ``worker``, again if it exits while not stopping; return once it exited after
        a signal."""
        while True:
            worker.process = spawn({**os.environ, **worker.env})
            code = await worker.process.wait()
            if stopping:
                return
            log.warning(
                "worker %d exited (status %s): starting it again in %g s",
                worker.index,
                code,
                RESTART_DELAY,
            )
            worker.env["INSTANCE_ID"] = f"{base_id}-{worker.index}-{os.urandom(2).hex()}"
            await trio.sleep(RESTART_DELAY)

    async def forward_signals() -> None:
        nonlocal stopping
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                stopping = True
                log.info("%s: passed on to the workers", signal.Signals(signum).name)
                for worker in workers:
                    if worker.process is not None and worker.process.returncode is None:
                        worker.process.send_signal(signal.SIGTERM)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward_signals)
            async with trio.open_nursery() as keepers:
                for worker in workers:
                    keepers.start_soon(keep, worker)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(workers)
        for sock in held:
            sock.close()
    failed = [w.process.returncode for w in workers if w.process and w.process.returncode]
    return 1 if failed else 0


async def _stop(workers: list[Worker]) -> None:
    """Kill what still runs (after STOP_GRACE from a SIGTERM)."""
    running = [w.process for w in workers if w.process and w.process.returncode is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_GRACE):
        for process in running:
            await process.wait()
    for process in running:
        if process.returncode is None:
            process.kill()
            await process.wait()
