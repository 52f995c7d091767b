"""The processes under test: canned nginx backends, the nginx reverse proxy, the paced backend,
``nfrx serve`` and its ``nfrx llm`` agents, all on 127.0.0.1 with free ports.

:class:`Stack` owns every process it starts and stops each by its own pid (SIGTERM, then SIGKILL
after a grace period) when its ``with`` block ends, whatever happened inside. nginx runs in the
foreground (``daemon off``) under a temporary prefix, so its config, pid file and logs live in a
temp dir that goes away with the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from types import TracebackType

API_KEY = "bench-api-key"
CLIENT_KEY = "bench-client-key"
READY_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BENCH_DIR = Path(__file__).resolve().parent

CANNED_JSON = (
    '{"id":"chatcmpl-canned","object":"chat.completion","created":1700000000,"model":"canned",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a canned '
    'reply."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":8,'
    '"total_tokens":17}}'
)
_SSE_CHUNK = (
    'data: {{"id":"chatcmpl-canned","object":"chat.completion.chunk","created":1700000000,'
    '"model":"canned-sse","choices":[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]}}\n\n'
)
CANNED_SSE = (
    _SSE_CHUNK.format(delta='{"role":"assistant","content":""}', finish="null")
    + _SSE_CHUNK.format(delta='{"content":"Hello!"}', finish="null")
    + _SSE_CHUNK.format(delta='{"content":" This is a canned reply."}', finish="null")
    + _SSE_CHUNK.format(delta="{}", finish='"stop"')
    + "data: [DONE]\n\n"
)


def free_port() -> int:
    """A port nobody listens on right now (the usual small race; fine on a bench machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _models(model: str) -> str:
    return json.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "bench"}]},
        separators=(",", ":"),
    )


def _canned_server(port: int, model: str, body: str, content_type: str) -> str:
    # nginx single-quoted strings: the bodies contain no single quotes or backslashes.
    return f"""
  server {{
    listen 127.0.0.1:{port};
    location = /v1/models {{ default_type application/json; return 200 '{_models(model)}'; }}
    location = /v1/chat/completions {{ default_type {content_type};
      add_header Cache-Control no-cache; return 200 '{body}'; }}
  }}"""


def _proxy_server(port: int, upstream: str) -> str:
    return f"""
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $proxy_host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 3600s;
    }}
  }}"""


@attrs.frozen
class Ports:
    json: int = attrs.field(factory=free_port)
    """canned non-streaming chat (model ``canned``)"""
    sse: int = attrs.field(factory=free_port)
    """canned 4-event SSE (model ``canned-sse``)"""
    queued: int = attrs.field(factory=free_port)
    """canned JSON again, as model ``queued`` for the capacity-1 agent"""
    paced: int = attrs.field(factory=free_port)
    """the paced/bulk Trio backend"""
    proxy_json: int = attrs.field(factory=free_port)
    proxy_sse: int = attrs.field(factory=free_port)
    proxy_paced: int = attrs.field(factory=free_port)
    nfrx: int = attrs.field(factory=free_port)


def nginx_config(ports: Ports) -> str:
    servers = [
        _canned_server(ports.json, "canned", CANNED_JSON, "application/json"),
        _canned_server(ports.sse, "canned-sse", CANNED_SSE, "text/event-stream"),
        _canned_server(ports.queued, "queued", CANNED_JSON, "application/json"),
        _proxy_server(ports.proxy_json, "canned_json"),
        _proxy_server(ports.proxy_sse, "canned_sse"),
        _proxy_server(ports.proxy_paced, "paced"),
    ]
    return f"""worker_processes 1;
daemon off;
pid nginx.pid;
error_log logs/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  keepalive_requests 1000000;
  upstream canned_json {{ server 127.0.0.1:{ports.json}; keepalive 64; }}
  upstream canned_sse {{ server 127.0.0.1:{ports.sse}; keepalive 64; }}
  upstream paced {{ server 127.0.0.1:{ports.paced}; keepalive 64; }}
{"".join(servers)}
}}
"""


@attrs.define(eq=False)
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kib(self) -> int:
        """Resident set size now (VmRSS), in KiB; 0 once the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (``/proc/<pid>/stat`` utime + stime); 0 once gone."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)"; utime, stime: 14, 15
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@attrs.define(eq=False)
class Stack:
    """Start with :meth:`start`; use as a context manager so everything stops by itself."""

    ports: Ports = attrs.field(factory=Ports)
    workdir: Path = attrs.field(
        factory=lambda: Path(tempfile.mkdtemp(prefix="nfrx-bench-")).resolve()
    )
    procs: list[Proc] = attrs.field(factory=list)
    server: Proc | None = None
    agents: dict[str, Proc] = attrs.field(factory=dict)
    rev: str | None = None
    """Run nfrx as of this git revision (extracted into the temp dir) instead of the checkout
    the virtual environment imports, e.g. while the working tree is mid-edit."""

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log_file: IO[bytes]
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """SIGTERM every process we started (nfrx twice: drain, then stop now), newest first;
        SIGKILL whatever is still there after 5 s; then remove the temp dir."""
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
                if proc.name.startswith(("nfrx", "agent")):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self, *, agents: dict[str, tuple[int, int]] | None = None) -> None:
        """Start the backends, nginx, the server and one agent per ``{name: (port, slots)}``
        (default: ``canned``, ``canned-sse``, ``paced`` with 64 / 64 / 2100 slots and the
        capacity-1 ``queued``). Returns once every agent is registered."""
        p = self.ports
        prefix = self.workdir / "nginx"
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        (prefix / "nginx.conf").write_text(nginx_config(p))
        self._spawn("nginx", ["nginx", "-p", str(prefix), "-c", "nginx.conf"])
        self._spawn("paced", [sys.executable, str(BENCH_DIR / "paced_backend.py"), str(p.paced)])
        for port in (p.json, p.sse, p.queued, p.paced, p.proxy_json):
            wait_port(port, self)
        if self.rev is not None:
            self._extract(self.rev)
        self.server = self._spawn(
            "nfrx-serve",
            [sys.executable, "-m", "nfrx", "serve", "--host", "127.0.0.1", "--port", str(p.nfrx)],
            self._env(
                API_KEY=API_KEY,
                CLIENT_KEY=CLIENT_KEY,
                LLM_QUEUE_SIZE="10000",
                LLM_QUEUE_TIMEOUT="120",
                REQUEST_TIMEOUT="600",
            ),
        )
        wait_port(p.nfrx, self)
        plan = agents or {
            "canned": (p.json, 64),
            "canned-sse": (p.sse, 64),
            "paced": (p.paced, 2100),
            "queued": (p.queued, 1),
        }
        for name, (port, slots) in plan.items():
            self.agents[name] = self._spawn(
                f"agent-{name}",
                [sys.executable, "-m", "nfrx", "llm"],
                self._env(
                    SERVER_URL=f"ws://127.0.0.1:{p.nfrx}/api/llm/connect",
                    CLIENT_KEY=CLIENT_KEY,
                    COMPLETION_BASE_URL=f"http://127.0.0.1:{port}/v1",
                    CLIENT_NAME=name,
                    CLIENT_ID=f"bench-{name}",
                    MAX_CONCURRENCY=str(slots),
                ),
            )
        self._wait_agents(len(plan))

    def _extract(self, rev: str) -> None:
        src = self.workdir / "src"
        src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "archive", rev, "nfrx"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True, timeout=60)

    def _env(self, **settings: str) -> dict[str, str]:
        env = nfrx_env(**settings)
        if self.rev is not None:
            env["PYTHONPATH"] = str(self.workdir / "src")
        return env

    def _wait_agents(self, count: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{self.ports.nfrx}/healthz"
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if json.load(resp)["agents"].get("llm", 0) >= count:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"only some of {count} agents registered in time\n{self.logs()}")
            time.sleep(0.05)  # polling a readiness condition, bounded by READY_TIMEOUT

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.procs)

    # -- addresses -------------------------------------------------------------------------

    def url(self, path: str, *, model: str) -> str:
        """The chat URL of ``path`` (direct, nginx, nfrx) for ``model`` (``long`` is served by
        the paced backend, so it shares the ``paced`` agent and proxy)."""
        p = self.ports
        if path == "nfrx":
            return f"http://127.0.0.1:{p.nfrx}/api/llm/v1/chat/completions"
        table: dict[tuple[str, str], int] = {
            ("direct", "canned"): p.json,
            ("direct", "canned-sse"): p.sse,
            ("direct", "paced"): p.paced,
            ("direct", "long"): p.paced,
            ("nginx", "canned"): p.proxy_json,
            ("nginx", "canned-sse"): p.proxy_sse,
            ("nginx", "paced"): p.proxy_paced,
            ("nginx", "long"): p.proxy_paced,
        }
        return f"http://127.0.0.1:{table[path, model]}/v1/chat/completions"


def nfrx_env(**settings: str) -> dict[str, str]:
    """The environment for an nfrx process: ours, minus any nfrx setting the caller's shell
    has, plus ``settings`` and quiet logs."""
    drop = {"API_KEY", "CLIENT_KEY", "CONFIG_FILE", "PORT", "HOST", "PLUGINS", "LOG_FORMAT"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("LLM_", "COMPLETION_")) and not k.endswith("_PROXY")
    }
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="warning", **settings)
    return env


def wait_port(port: int, stack: Stack, timeout: float = READY_TIMEOUT) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        stack.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}\n{stack.logs()}") from None
            time.sleep(0.02)  # polling a readiness condition, bounded by timeout


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": model}
