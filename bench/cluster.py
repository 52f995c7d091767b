"""Several instances, measured: server CPU per relayed request with 1, 2 and 3 instances, Redis
commands per request, and the cross-instance queue hand-off latency (issue 17).

``python bench/cluster.py [--seconds S] [--rounds R]`` needs nginx, wrk and redis-server. It
starts everything on 127.0.0.1 (free ports, a temporary directory), bounds every wait, stops each
process by its pid at the end, and prints the load average at the start, the tables, and a
verdict per target -- or none when the load average was above 1.5 (a shared machine skews these
figures; the tables are printed anyway). Nothing is written to disk.

* **CPU** (targets: 2 and 3 instances ≤ 1.15 times one alone): N instances -- one alone without
  Redis, then 1, 2 and 3 sharing a Redis -- and one agent (``MAX_CONCURRENCY=64``, dialled to
  the first, holding a tunnel to each) relaying nginx's canned JSON chat answer; one wrk per
  instance, 32 connections in all, S seconds. Server CPU is read from ``/proc/<pid>/stat`` of
  every instance (user + system) before and after: µs per request = CPU / requests.
* **Redis, free agent** (target: no command): ``INFO commandstats`` over the same load: the
  commands done for requests -- all but the heartbeats' (``SET``, ``PEXPIRE``, ``SADD``,
  ``SMEMBERS``, ``MGET`` each second) and the shared queue's resync every 10 s -- which must be
  none; and all commands less the instances' idle rate (measured for S seconds before) per
  request, which should be about 0.
* **Redis, queued** (target: O(1) small commands): two instances, an agent of capacity 1, 8
  connections on each instance for S seconds, so that nearly every request waits: queue script
  calls, and the commands done for requests (those inside the scripts count too), per request.
* **Hand-off** (target: p50 ≤ 2 ms across instances): two instances, an agent of capacity 1 and
  a backend in this process (:class:`Backend`). A request holds the agent's one slot through the
  first instance for 0.3 s while another waits on the second (and, for comparison, on the
  first); the hand-off is the time from the holder's answer leaving the backend to the waiter's
  request reaching it, on the backend's clock: the agent relays the end and frees its slot, the
  waiter's instance hears of it (the agent's Load frame; across instances) and dispatches, the
  agent sends the request on. R rounds each; a round whose waiter was not seen queued (the
  shared queue read from the first instance's state) is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from loadgen import WrkResult
from stack import API_KEY, CANNED_JSON, CLIENT_KEY, _canned_server, free_port, machine, nfrx_env

READY = 30.0
HOLD = 0.3
"""Seconds the hand-off's holder keeps the agent's one slot."""
MAX_LOAD = 1.5
"""Above this load average at the start (2 cores), no verdict: the figures are skewed."""
CPU_RATIO_TARGET = 1.15
HANDOFF_P50_TARGET_MS = 2.0
QUEUED_CALLS_TARGET = 2.0
"""Queue script calls per queued request: one to join, one to leave (O(1))."""


class Procs:
    """Every process this bench starts; :meth:`close` stops each by its pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"p{len(self.procs)}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nfrx: the first drains, the second stops
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def check(self) -> None:
        for n, proc in enumerate(self.procs):
            if proc.poll() not in (None, 0, -signal.SIGTERM):
                log = (self.tmp / f"p{n}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{proc.args} exited ({proc.returncode}):\n{log}")

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for log in self.logs:
            log.close()


def wait_for(check: Any, what: str, procs: Procs, timeout: float = READY) -> None:
    """Poll a readiness condition (bounded by ``timeout``; a process that died ends it)."""
    deadline = time.monotonic() + timeout
    while not check():
        procs.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout:g} s: {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- Redis -----------------------------------------------------------------------------------


def start_redis(procs: Procs) -> Path:
    path = procs.tmp / "redis.sock"
    argv = ["redis-server", "--port", "0", "--unixsocket", str(path), "--save", ""]
    procs.start([*argv, "--appendonly", "no", "--dir", str(procs.tmp)])
    wait_for(lambda: path.exists() and redis(path, "PING") == "PONG", "redis-server", procs)
    return path


def redis(path: Path, *words: str) -> str:
    """One inline command; its simple or bulk string answer."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(" ".join(words).encode() + b"\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"redis closed the connection after {data!r}")
            data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$"):
                size = int(head[1:])
                if len(rest) >= size + 2:
                    return rest[:size].decode()
            elif data.endswith(b"\r\n"):
                return head[1:].decode()


def commands(path: Path) -> dict[str, int]:
    """Calls per command since the last ``CONFIG RESETSTAT``."""
    counts = {}
    for line in redis(path, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            counts[name.removeprefix("cmdstat_")] = int(fields.split(",")[0].split("=")[1])
    return counts


def script_calls(counts: dict[str, int]) -> int:
    return counts.get("evalsha", 0) + counts.get("eval", 0) + counts.get("fcall", 0)


BACKGROUND_COMMANDS = frozenset(
    {"set", "pexpire", "sadd", "smembers", "mget", "srem", "ping", "hello", "config|resetstat"}
    | {"subscribe", "unsubscribe", "punsubscribe", "zrange"}
)
"""What the instances send whatever the traffic -- heartbeats each second, and every 10 s the
shared queue's resync (subscribe again, read it whole) -- and this bench's own reset; anything
else is work done for requests."""


def idle_rate(path: Path, seconds: float) -> float:
    """Commands per second the instances send with no client (their heartbeats); the counters
    are reset again at the end, for the window that follows."""
    redis(path, "CONFIG", "RESETSTAT")
    started = time.monotonic()
    time.sleep(seconds)  # the subject: a window of idleness, not a readiness wait
    counts = commands(path)
    elapsed = time.monotonic() - started
    redis(path, "CONFIG", "RESETSTAT")
    return sum(counts.values()) / elapsed


def beyond_heartbeats(counts: dict[str, int], rate: float, elapsed: float) -> tuple[int, float]:
    """(commands done for requests, all commands less the idle rate over ``elapsed``)."""
    work = sum(n for name, n in counts.items() if name not in BACKGROUND_COMMANDS)
    return work, sum(counts.values()) - rate * elapsed


# -- the gateway -----------------------------------------------------------------------------


class Gateway:
    """``count`` instances (sharing ``redis_path`` when given) and one agent dialled to the
    first, with a tunnel to every instance once :meth:`start` returns."""

    def __init__(
        self, procs: Procs, count: int, redis_path: Path | None, backend: str, capacity: int
    ) -> None:
        self.procs = procs
        self.ports = [free_port() for _ in range(count)]
        self.servers: list[subprocess.Popen[bytes]] = []
        for n, port in enumerate(self.ports):
            settings = {
                "API_KEY": API_KEY,
                "CLIENT_KEY": CLIENT_KEY,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "INSTANCE_ID": f"i{n}",
                "STATE_DIR": str(procs.tmp / "state"),
                "LLM_QUEUE_SIZE": "10000",
            }
            if redis_path is not None:
                settings["REDIS_URL"] = f"unix://{redis_path}"
            argv = [sys.executable, "-m", "nfrx", "serve"]
            self.servers.append(procs.start(argv, nfrx_env(**settings)))
        for port in self.ports:
            wait_for(lambda port=port: listening(port), f"nfrx serve on {port}", procs)
        self.agent = procs.start(
            [sys.executable, "-m", "nfrx", "llm"],
            nfrx_env(
                CLIENT_KEY=CLIENT_KEY,
                SERVER_URL=f"ws://127.0.0.1:{self.ports[0]}/api/llm/connect",
                COMPLETION_BASE_URL=backend,
                MAX_CONCURRENCY=str(capacity),
            ),
        )
        shared = count if redis_path is not None else 0
        for port in self.ports:
            wait_for(lambda port=port: attached(port, shared), "the agent on each", procs)

    def cpu(self) -> float:
        """CPU seconds (user + system) of every instance so far."""
        total = 0.0
        for server in self.servers:
            fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        for proc in (self.agent, *self.servers):
            self.procs.stop(proc)


def state(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/state", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        document: dict[str, Any] = json.load(response)
        return document


def attached(port: int, instances: int) -> bool:
    """Does ``port``'s state show the agent (on ``instances`` instances; 0: alone)?"""
    agents = state(port)["plugins"]["llm"]["agents"]
    if not agents:
        return False
    return instances == 0 or len(agents[0].get("instances", [])) == instances


def load(ports: list[int], connections: int, seconds: int, model: str) -> list[WrkResult]:
    """One wrk per port at once (``connections`` spread over them), ``seconds`` long."""
    per = max(1, connections // len(ports))
    code = (
        "import json, sys; sys.path.insert(0, {bench!r}); from loadgen import run_wrk; "
        "r = run_wrk({url!r}, connections={per}, seconds={seconds}, model={model!r}, "
        "stream=False, auth={auth!r}); "
        "print(json.dumps([r.requests, r.rps, r.p50_ms, r.p99_ms, r.mean_ms, r.errors]))"
    )
    runners = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code.format(
                    bench=str(Path(__file__).resolve().parent),
                    url=f"http://127.0.0.1:{port}/api/llm/v1/chat/completions",
                    per=per,
                    seconds=seconds,
                    model=model,
                    auth=API_KEY,
                ),
            ],
            stdout=subprocess.PIPE,
        )
        for port in ports
    ]
    results = []
    for runner in runners:
        out, _ = runner.communicate(timeout=seconds + 60)
        if runner.returncode != 0:
            raise RuntimeError(f"wrk runner failed ({runner.returncode})")
        results.append(WrkResult(*json.loads(out)))
    return results


# -- the measurements ------------------------------------------------------------------------


def cpu_and_commands(
    procs: Procs, redis_path: Path, backend: str, seconds: int
) -> tuple[list[str], dict[str, float]]:
    rows = []
    figures: dict[str, float] = {}
    base = None
    for count, shared in ((1, False), (1, True), (2, True), (3, True)):
        gateway = Gateway(procs, count, redis_path if shared else None, backend, 64)
        rate = idle_rate(redis_path, seconds) if shared else 0.0
        started = time.monotonic()
        before = gateway.cpu()
        results = load(gateway.ports, 32, seconds, "canned")
        cpu = gateway.cpu() - before
        busy = commands(redis_path) if shared else {}
        elapsed = time.monotonic() - started
        gateway.stop()
        requests = sum(r.requests for r in results)
        errors = sum(r.errors for r in results)
        us = cpu / max(requests, 1) * 1e6
        base = base or us
        label = f"{count} instance{'s' if count > 1 else ''}" + ("" if shared else ", alone")
        if shared:
            work, extra = beyond_heartbeats(busy, rate, elapsed)
            redis_cell = (
                f"{work} ({sum(busy.values())} in {elapsed:.1f} s; heartbeats alone "
                f"{rate * elapsed:.0f}: {extra / max(requests, 1):+.4f}/request)"
            )
            figures[f"work {count}"] = work
        else:
            redis_cell = "no Redis"
        figures[f"ratio {count}{'' if shared else ' alone'}"] = us / base
        rows.append(
            f"| {label} | {requests:,} | {errors} | {requests / seconds:,.0f} | {us:,.0f} "
            f"| {us / base:.2f} | {redis_cell} |"
        )
    return rows, figures


def queued_commands(
    procs: Procs, redis_path: Path, backend: str, seconds: int
) -> tuple[str, float]:
    gateway = Gateway(procs, 2, redis_path, backend, 1)
    rate = idle_rate(redis_path, seconds)
    started = time.monotonic()
    results = load(gateway.ports, 16, seconds, "canned")
    busy = commands(redis_path)
    elapsed = time.monotonic() - started
    gateway.stop()
    requests = sum(r.requests for r in results)
    errors = sum(r.errors for r in results)
    work, extra = beyond_heartbeats(busy, rate, elapsed)
    calls = script_calls(busy) / max(requests, 1)
    shown = ", ".join(f"{name} {n}" for name, n in sorted(busy.items()))
    line = (
        f"{requests:,} requests ({errors} errors) through one agent of capacity 1, 8 connections "
        f"on each of 2 instances for {seconds} s: {calls:.2f} queue script calls and "
        f"{work / max(requests, 1):.2f} commands in all per request (inside the scripts too) "
        f"({extra / max(requests, 1):.2f} beyond the idle rate). Commands: {shown}."
    )
    return line, calls


class Backend:
    """An OpenAI-style backend in threads of this process that notes, per request (by its user
    message), when it arrived and when its answer was handed to the socket: the hand-off is read
    off the backend's own clock, whatever the bench's client does meanwhile. A message starting
    with ``hold`` is answered after :data:`HOLD` seconds, any other at once."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self.changed = threading.Condition()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else a small write waits for a delayed ACK (40 ms)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                models = [{"id": "handoff", "object": "model", "owned_by": "bench"}]
                self.answer({"object": "list", "data": models})

            def do_POST(self) -> None:
                now = time.monotonic()
                tag = json.loads(self.body())["messages"][0]["content"]
                backend.note(backend.arrived, tag, now)
                if tag.startswith("hold"):
                    time.sleep(HOLD)  # the subject: the one slot held, a waiter queued
                backend.note(backend.answered, tag, time.monotonic())
                self.answer(json.loads(CANNED_JSON))

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def answer(self, document: object) -> None:
                data = json.dumps(document).encode()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                )
                self.wfile.write(head.encode() + data)  # one write: head and body together

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def note(self, table: dict[str, float], tag: str, when: float) -> None:
        with self.changed:
            table[tag] = when
            self.changed.notify_all()

    def wait(self, table: dict[str, float], tag: str, timeout: float = READY) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: tag in table, timeout):
                raise RuntimeError(f"the backend never saw {tag!r}")
            return table[tag]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def handoff(procs: Procs, redis_path: Path, rounds: int) -> tuple[list[str], float]:
    backend = Backend()
    gateway = Gateway(procs, 2, redis_path, backend.url, 1)
    rows = []
    across = 0.0
    try:
        first, second = gateway.ports
        for label, port in (("same instance", first), ("across instances", second)):
            samples: list[float] = []
            missed = 0
            for n in range(rounds):
                sample = one_handoff(backend, first, port, f"{label} {n}")
                if sample is None:
                    missed += 1
                else:
                    samples.append(sample)
            if not samples:
                raise RuntimeError(f"{label}: no waiter was queued in {rounds} rounds")
            samples.sort()
            p50 = samples[len(samples) // 2] * 1000
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
            counted = f"{len(samples)} ({missed} not queued)"
            rows.append(f"| {label} | {counted} | {p50:.2f} | {p99:.2f} |")
            across = p50
    finally:
        gateway.stop()
        backend.close()
    return rows, across


def post(port: int, content: str) -> socket.socket:
    body = {"model": "handoff", "messages": [{"role": "user", "content": content}]}
    data = json.dumps(body).encode()
    head = (
        "POST /api/llm/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=READY)
    sock.sendall(head.encode() + data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def one_handoff(backend: Backend, holder_port: int, waiter_port: int, tag: str) -> float | None:
    """Seconds from the holder's answer leaving the backend to the waiter's request reaching it;
    None when the waiter was not seen queued before the holder's answer (not a hand-off)."""
    holder = post(holder_port, f"hold {tag}")
    try:
        backend.wait(backend.arrived, f"hold {tag}")  # it holds the agent's one slot now
        waiter = post(waiter_port, f"wait {tag}")
        try:
            queued = False
            while f"hold {tag}" not in backend.answered:
                if state(holder_port)["plugins"]["llm"]["queue"]["length"] >= 1:
                    queued = True  # the holder's instance counts the other's waiters too
                    break
            released = backend.wait(backend.answered, f"hold {tag}")
            served = backend.wait(backend.arrived, f"wait {tag}")
            for sock in (holder, waiter):
                if not read_all(sock).startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{tag}: an answer was not 200")
            return served - released if queued else None
        finally:
            waiter.close()
    finally:
        holder.close()


# -- main ------------------------------------------------------------------------------------


def verdicts(
    figures: dict[str, float], queued_calls: float, across_p50: float
) -> list[tuple[bool, str]]:
    """(met, what was measured against which target) for each target."""
    checks = []
    for count in (2, 3):
        ratio = figures[f"ratio {count}"] / figures["ratio 1 alone"]
        checks.append(
            (
                ratio <= CPU_RATIO_TARGET,
                f"CPU per request, {count} instances / one alone {ratio:.2f} "
                f"(target ≤ {CPU_RATIO_TARGET})",
            )
        )
    work = sum(figures[f"work {count}"] for count in (1, 2, 3))
    checks.append(
        (
            work == 0,
            f"Redis with a free agent: {work:.0f} commands done for requests over the three loads "
            "(target: none)",
        )
    )
    checks.append(
        (
            queued_calls <= QUEUED_CALLS_TARGET,
            f"Redis when queued: {queued_calls:.2f} queue script calls per request "
            f"(target ≤ {QUEUED_CALLS_TARGET:g}: join and leave)",
        )
    )
    checks.append(
        (
            across_p50 <= HANDOFF_P50_TARGET_MS,
            f"hand-off across instances p50 {across_p50:.2f} ms "
            f"(target ≤ {HANDOFF_P50_TARGET_MS:g} ms)",
        )
    )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per load (default 10)")
    parser.add_argument("--rounds", type=int, default=50, help="hand-offs each (default 50)")
    args = parser.parse_args()
    for tool in ("nginx", "wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    started_load = os.getloadavg()[0]
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}")
    print(f"load average at the start: {started_load:.2f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="nfrx-bench-cluster-"))
    procs = Procs(tmp)
    try:
        json_port = free_port()
        for name in ("logs", "tmp"):
            (tmp / name).mkdir()
        (tmp / "nginx.conf").write_text(
            "worker_processes 1; daemon off; pid nginx.pid; error_log logs/error.log warn;\n"
            "events { worker_connections 4096; }\nhttp { access_log off; "
            "client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; "
            "fastcgi_temp_path tmp/f; uwsgi_temp_path tmp/u; scgi_temp_path tmp/s;\n"
            + _canned_server(json_port, "canned", CANNED_JSON, "application/json")
            + "}\n"
        )
        procs.start(["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf")])
        wait_for(lambda: listening(json_port), "nginx", procs)
        redis_path = start_redis(procs)
        backend = f"http://127.0.0.1:{json_port}/v1"

        print()
        print("| gateway | requests | errors | rps | server CPU µs/request | ratio | Redis "
              "commands done for requests |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---|")
        rows, figures = cpu_and_commands(procs, redis_path, backend, args.seconds)
        print("\n".join(rows), flush=True)
        print()
        line, queued_calls = queued_commands(procs, redis_path, backend, args.seconds)
        print(line, flush=True)
        print()
        print("| queue hand-off | rounds | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|")
        rows, across = handoff(procs, redis_path, args.rounds)
        print("\n".join(rows), flush=True)
        print()
        ended_load = os.getloadavg()[0]
        print(f"load average at the start {started_load:.2f}, at the end {ended_load:.2f}")
        loaded = started_load > MAX_LOAD
        if loaded:
            print(f"NO VERDICT: the load average was {started_load:.2f} > {MAX_LOAD} at the start")
        for met, text in verdicts(figures, queued_calls, across):
            print(f"{'-' if loaded else 'PASS' if met else 'FAIL'}: {text}")
    finally:
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
