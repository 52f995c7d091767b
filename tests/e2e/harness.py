"""Real ``nfrx`` processes for end-to-end tests: started with ``python -m nfrx``, bound to
127.0.0.1 on free ports, their output collected, stopped by their own pid at the end.

Readiness is read from the processes' own log lines (the server prints the URL it bound; an
agent prints "connected to ..." once the server has registered it), never guessed with sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

READY_TIMEOUT = 30.0
_CLEAN_ENV_DROP = re.compile(
    r"^(API_KEY|CLIENT_KEY|SERVER_URL|CLIENT_ID|CLIENT_NAME|COMPLETION_.*|MAX_CONCURRENCY|"
    r"PORT|HOST|REQUEST_TIMEOUT|DRAIN_TIMEOUT|LOG_LEVEL|RECONNECT|CONFIG_FILE|.*_PROXY|"
    r"HEARTBEAT_INTERVAL|AGENT_DEAD_AFTER|AGENT_MAX_.*|MODEL_POLL_INTERVAL|MAX_REQUEST_BYTES|"
    r"LLM_.*|"
    r"EMBEDDING_BATCH_SIZE|PLUGINS|ALLOWED_ORIGINS|API_HTTP_ROLES|CLIENT_HTTP_ROLES|TLS_CERT|"
    r"TLS_KEY|CA_FILE|LOG_FORMAT|LOG_DIR|DOC_.*|ASR_.*|MAX_UPLOAD_BYTES|MCP_.*|AUTH_TOKEN|"
    r"BROKER_.*|PUBLIC_URL|STATUS_ADDR|METRICS_PORT|JOBS_.*|TRANSFER_TTL|STATE_DIR|"
    r"ADMIN_HTTP_ROLES|KEY_RATE_WINDOW|REDIS_URL|REDIS_ADDR|INSTANCE_ID|ADVERTISE_URL|AGENT_PORT|"
    r"REUSE_PORT|WORKERS)$",
    re.IGNORECASE,
)


@attrs.define(eq=False)
class NfrxProcess:
    name: str
    process: trio.Process
    lines: list[str] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    eof: bool = False

    async def _pump(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for data in self.process.stdout:
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self.lines.append(line.decode("utf-8", "replace"))
                self._changed.set()
                self._changed = trio.Event()
        finally:
            if buffer:
                self.lines.append(buffer.decode("utf-8", "replace"))
            self.eof = True
            self._changed.set()

    async def wait_for_line(
        self, pattern: str, *, start: int = 0, timeout: float = READY_TIMEOUT
    ) -> re.Match[str]:
        """The first output line (from index ``start``) matching ``pattern``."""
        regex = re.compile(pattern)
        index = start
        with trio.fail_after(timeout):
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                if self.eof:
                    raise AssertionError(
                        f"{self.name} exited ({self.process.returncode}) without printing "
                        f"{pattern!r}:\n{self.output()}"
                    )
                await self._changed.wait()

    async def wait_eof(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the output ends: every process writing to it (children too) has exited."""
        with trio.fail_after(timeout):
            while not self.eof:
                await self._changed.wait()

    async def wait_exit(self, timeout: float = READY_TIMEOUT) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()

    def output(self) -> str:
        return "\n".join(self.lines)

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _CLEAN_ENV_DROP.match(k)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@asynccontextmanager
async def nfrx(name: str, args: list[str], env: Mapping[str, str]) -> AsyncIterator[NfrxProcess]:
    """Run ``python -m nfrx <args>`` with a clean environment (see :func:`run_process`)."""
    async with run_process(name, [sys.executable, "-m", "nfrx", *args], clean_env(env)) as proc:
        yield proc


@asynccontextmanager
async def run_process(
    name: str, argv: list[str], env: Mapping[str, str], *, cwd: str | None = None
) -> AsyncIterator[NfrxProcess]:
    """Run ``argv`` with its output collected; on exit SIGTERM it twice (nfrx: stop at once),
    then SIGKILL after 5 s, by its pid."""
    process = await trio.lowlevel.open_process(
        argv,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    proc = NfrxProcess(name, process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proc._pump)
        try:
            yield proc
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    process.send_signal(signal.SIGTERM)
                    with trio.move_on_after(5):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                with trio.move_on_after(2):
                    while not proc.eof:
                        await proc._changed.wait()
            nursery.cancel_scope.cancel()


@attrs.define(eq=False)
class Server:
    proc: NfrxProcess
    url: str  # http://127.0.0.1:PORT (https:// with TLS_CERT)
    api_key: str
    client_key: str

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/llm/v1"

    @property
    def connect_url(self) -> str:
        return re.sub(r"^http", "ws", self.url) + "/api/llm/connect"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@asynccontextmanager
async def run_server(
    *,
    api_key: str = "ak",
    client_key: str = "ck",
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
) -> AsyncIterator[Server]:
    """A server on a free port. Its STATE_DIR (client keys) is a new temporary directory unless
    ``env`` names one (a test that restarts a server passes the same one twice)."""
    environment = {"API_KEY": api_key, "CLIENT_KEY": client_key, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="nfrx-state-") as state_dir:
        environment.setdefault("STATE_DIR", state_dir)
        arguments = ["serve", "--host", "127.0.0.1", "--port", "0", *(args or [])]
        async with nfrx("server", arguments, environment) as p:
            match = await p.wait_for_line(r"listening on (https?://127\.0\.0\.1:\d+)")
            yield Server(p, match.group(1), api_key, client_key)


@asynccontextmanager
async def run_agent(
    server: Server,
    backend_url: str,
    *,
    name: str = "alpha",
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
    wait_connected: bool = True,
) -> AsyncIterator[NfrxProcess]:
    environment = {
        "SERVER_URL": server.connect_url,
        "CLIENT_KEY": server.client_key,
        "COMPLETION_BASE_URL": backend_url,
        "CLIENT_NAME": name,
        **(env or {}),
    }
    async with nfrx(f"agent {name}", ["llm", *(args or [])], environment) as p:
        if wait_connected:
            await p.wait_for_line(r"connected to ")
        yield p


@asynccontextmanager
async def run_plugin_agent(
    server: Server,
    kind: str,
    env: Mapping[str, str],
    *,
    name: str = "alpha",
    args: list[str] | None = None,
) -> AsyncIterator[NfrxProcess]:
    """An ``nfrx <kind>`` agent (``docling``, ``asr``) connected to ``server``'s
    ``/api/<kind>/connect``; ``env`` names its backend (``DOC_BASE_URL``, ``ASR_BASE_URL``)."""
    environment = {
        "SERVER_URL": re.sub(r"^http", "ws", server.url) + f"/api/{kind}/connect",
        "CLIENT_KEY": server.client_key,
        "CLIENT_NAME": name,
        **env,
    }
    async with nfrx(f"{kind} agent {name}", [kind, *(args or [])], environment) as p:
        await p.wait_for_line(r"connected to ")
        yield p
