"""Scenarios beyond wrk's request loop, each with a hard time cap and one printed figure;
:func:`run_all` runs them in order and returns the figures the targets table needs.

The client is a few lines of raw HTTP/1.1 over Trio sockets (one connection per request, h11
reading the answer by its framing), cheap enough for 2,000 concurrent streams from one process
and precise about when it closes a socket.
"""

from __future__ import annotations

import collections
import json
import statistics
import time
from typing import TYPE_CHECKING

import attrs
import h11
import hotpath
import trio
from stack import API_KEY

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping
    from pathlib import Path

    from stack import Proc, Stack

PACED_EVENTS = 23  # role chunk + 20 content chunks + stop chunk + [DONE]


def _request(
    port: int, path: str, body: Mapping[str, object], request_id: str, auth: bool
) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        f"X-Request-Id: {request_id}",
    ]
    if auth:
        lines.append(f"Authorization: Bearer {API_KEY}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _read_response(stream: trio.SocketStream, *, until: bytes = b"") -> tuple[int, bytes]:
    """Status and body of one response, read by its framing (never by waiting for EOF: the
    server may keep the connection open). With ``until``, stop as soon as the body holds it."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
    )
    conn.send(h11.EndOfMessage())
    status = 0
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if until and until in body:
                return status, body
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, body


def _target(stack: Stack, via: str) -> tuple[int, str, bool]:
    if via == "nfrx":
        return stack.ports.nfrx, "/api/llm/v1/chat/completions", True
    port = stack.ports.proxy_paced if via == "nginx" else stack.ports.paced
    return port, "/v1/chat/completions", False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _fetch_closes(port: int) -> dict[str, float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /bench/closes HTTP/1.1\r\nHost: x\r\n\r\n")
        _, data = await _read_response(stream)
    closes: dict[str, float] = json.loads(data)
    return closes


# -- cancellation ------------------------------------------------------------------------------


@attrs.frozen
class CancelResult:
    via: str
    count: int
    seen: int
    p50_ms: float
    p99_ms: float


async def cancellation(stack: Stack, via: str, count: int = 200) -> CancelResult:
    """Open a paced stream, read its first event, close the socket; the backend notes when it
    sees its own connection close. Reports close-to-close latency over ``count`` cancels."""
    port, path, auth = _target(stack, via)
    run = f"cancel-{via}-{time.monotonic_ns()}"
    closed_at: dict[str, float] = {}
    with trio.fail_after(60):
        for i in range(count):
            request_id = f"{run}-{i}"
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            body = {"model": "paced", "stream": True, "messages": []}
            await stream.send_all(_request(port, path, body, request_id, auth))
            status, data = await _read_response(stream, until=b"data:")
            if status != 200 or b"data:" not in data:
                raise RuntimeError(f"{via}: no first event: {status} {data[:200]!r}")
            closed_at[request_id] = time.monotonic()
            await trio.aclose_forcefully(stream)
        # The backend reports closes as it sees them; wait (bounded) until all are in.
        deadline = trio.current_time() + 5
        while True:
            seen = await _fetch_closes(stack.ports.paced)
            mine = {k: v for k, v in seen.items() if k in closed_at}
            if len(mine) == count or trio.current_time() > deadline:
                break
            await trio.sleep(0.05)
    latencies = [(mine[k] - closed_at[k]) * 1000 for k in mine]
    return CancelResult(via, count, len(mine), percentile(latencies, 50), percentile(latencies, 99))


# -- queue dispatch ----------------------------------------------------------------------------


@attrs.frozen
class QueueResult:
    count: int
    errors: int
    wall_s: float
    per_request_ms: float
    single_ms: float
    """Median latency of one request at a time on the same capacity-1 agent."""


async def _one_json(port: int, path: str, model: str, request_id: str) -> tuple[bool, float]:
    started = time.monotonic()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        await stream.send_all(_request(port, path, body, request_id, True))
        status, _ = await _read_response(stream)
    return status == 200, (time.monotonic() - started) * 1000


async def queue_dispatch(stack: Stack, count: int = 200) -> QueueResult:
    """``count`` simultaneous requests onto the capacity-1 agent ``queued``: all but one wait in
    the queue and are handed the slot one after another."""
    port, path = stack.ports.nfrx, "/api/llm/v1/chat/completions"
    singles = []
    for i in range(20):
        ok, ms = await _one_json(port, path, "queued", f"q-single-{i}")
        if ok:
            singles.append(ms)
    results: list[tuple[bool, float]] = []

    async def one(i: int) -> None:
        results.append(await _one_json(port, path, "queued", f"q-{i}"))

    started = time.monotonic()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
    wall = time.monotonic() - started
    return QueueResult(
        count,
        sum(1 for ok, _ in results if not ok),
        wall,
        wall / count * 1000,
        statistics.median(singles) if singles else float("nan"),
    )


# -- many paced streams ------------------------------------------------------------------------


@attrs.frozen
class StreamsResult:
    via: str
    count: int
    errors: int
    peak_inflight: int
    p50_s: float
    p99_s: float
    rss_kib: dict[str, tuple[int, int, int]]
    """name -> (before, peak, after) VmRSS in KiB."""
    error_kinds: dict[str, int]
    """The first 100 characters of each distinct error, and how often it happened."""


async def _sample_rss(procs: dict[str, Proc], peaks: dict[str, int]) -> None:
    while True:
        for name, proc in procs.items():
            peaks[name] = max(peaks[name], proc.rss_kib())
        await trio.sleep(0.1)


async def paced_streams(stack: Stack, via: str, count: int = 2000) -> StreamsResult:
    """``count`` simultaneous paced streams (20 events, 50 ms apart) ``via`` a path; every one
    must arrive complete. RSS is nfrx's server and paced agent's whichever the path."""
    assert stack.server is not None
    port, path, auth = _target(stack, via)
    procs = {"server": stack.server, "agent": stack.agents["paced"]}
    before = {name: proc.rss_kib() for name, proc in procs.items()}
    peaks = dict(before)
    durations: list[float] = []
    errors: list[str] = []
    inflight = 0
    peak_inflight = 0

    async def one(i: int) -> None:
        nonlocal inflight, peak_inflight
        started = time.monotonic()
        inflight += 1
        peak_inflight = max(peak_inflight, inflight)
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                body = {"model": "paced", "stream": True, "messages": []}
                await stream.send_all(_request(port, path, body, f"s-{via}-{i}", auth))
                status, data = await _read_response(stream)
            events = data.count(b"data: ")
            if status != 200 or events != PACED_EVENTS:
                errors.append(f"HTTP {status}, {events} events: {data[-100:]!r}")
            else:
                durations.append(time.monotonic() - started)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            errors.append(repr(exc))
        finally:
            inflight -= 1

    with trio.fail_after(240):
        async with trio.open_nursery() as outer:
            outer.start_soon(_sample_rss, procs, peaks)
            async with trio.open_nursery() as nursery:
                for i in range(count):
                    nursery.start_soon(one, i)
            outer.cancel_scope.cancel()
    after = {name: proc.rss_kib() for name, proc in procs.items()}
    return StreamsResult(
        via,
        count,
        len(errors),
        peak_inflight,
        percentile(durations, 50),
        percentile(durations, 99),
        {name: (before[name], peaks[name], after[name]) for name in procs},
        dict(collections.Counter(e[:100] for e in errors).most_common(5)),
    )


# -- slow reader -------------------------------------------------------------------------------


@attrs.frozen
class SlowReaderResult:
    read_kib: int
    stalled_s: float
    rss_kib: dict[str, tuple[int, int]]
    """name -> (before, peak while the reader stalls) VmRSS in KiB."""


async def slow_reader(stack: Stack, stall: float = 3.0) -> SlowReaderResult:
    """Ask for a 256 MiB ``bulk`` stream through nfrx, read 1 MiB, then stop reading for
    ``stall`` s: flow control must hold the server's and agent's memory near where it was."""
    assert stack.server is not None
    port, path, _ = _target(stack, "nfrx")
    procs = {"server": stack.server, "agent": stack.agents["paced"]}
    before = {name: proc.rss_kib() for name, proc in procs.items()}
    peaks = dict(before)
    read = 0
    with trio.fail_after(stall + 30):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            body = {"model": "bulk", "stream": True, "messages": []}
            await stream.send_all(_request(port, path, body, "slow-reader", True))
            _, data = await _read_response(stream, until=b"x" * 65000)
            read = len(data)
            while read < 1024 * 1024:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                read += len(chunk)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sample_rss, procs, peaks)
                await trio.sleep(stall)
                nursery.cancel_scope.cancel()
    return SlowReaderResult(
        read // 1024, stall, {name: (before[name], peaks[name]) for name in procs}
    )


# -- all of them -------------------------------------------------------------------------------


@attrs.define
class Figures:
    lines: list[str] = attrs.field(factory=list)
    cancel_p50_ms: dict[str, float] = attrs.field(factory=dict)
    """via -> client close -> backend close, p50."""
    paced: dict[str, StreamsResult] = attrs.field(factory=dict)
    """via -> the paced streams' result."""
    paced_cpu_us: dict[str, float] = attrs.field(factory=dict)
    """nfrx process -> CPU µs per relayed event over the nfrx paced streams."""
    profiles: str = ""

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)


def run_all(stack: Stack, quick: bool, out_dir: Path | None) -> Figures:
    """Every scenario in turn; with ``out_dir``, py-spy the nfrx paced streams too."""
    figures = Figures()
    for via in ("nginx", "nfrx"):
        c = trio.run(cancellation, stack, via, 200)
        figures.cancel_p50_ms[via] = c.p50_ms
        figures.say(
            f"- cancellation via {via}: client close → backend sees close, p50 "
            f"{c.p50_ms:.2f} ms, p99 {c.p99_ms:.2f} ms ({c.seen}/{c.count} closes seen)"
        )
    q = trio.run(queue_dispatch, stack, 200)
    figures.say(
        f"- queue dispatch: {q.count} simultaneous requests onto a capacity-1 agent: "
        f"{q.wall_s:.2f} s wall, {q.per_request_ms:.2f} ms per request "
        f"(one at a time: {q.single_ms:.2f} ms each), errors {q.errors}"
    )
    count = 500 if quick else 2000
    for via in ("nginx", "nfrx"):
        _paced(stack, via, count, figures, out_dir if via == "nfrx" else None)
    r = trio.run(slow_reader, stack, 3.0)
    rss = ", ".join(
        f"{name} {b / 1024:.0f} → {p / 1024:.0f} MiB" for name, (b, p) in r.rss_kib.items()
    )
    figures.say(
        f"- slow reader (256 MiB stream, read {r.read_kib} KiB, then stalled {r.stalled_s:.0f} s): "
        f"RSS {rss}"
    )
    return figures


def _paced(stack: Stack, via: str, count: int, figures: Figures, out_dir: Path | None) -> None:
    assert stack.server is not None
    procs = {"server": stack.server, "agent": stack.agents["paced"]}
    samplers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    if out_dir is not None and hotpath.available():
        for name, proc in procs.items():
            path = out_dir / f"{name}-paced.folded"
            samplers[name] = (hotpath.start(proc.pid, 8, path), path)
    cpu_before = {name: proc.cpu_seconds() for name, proc in procs.items()}
    s = trio.run(paced_streams, stack, via, count)
    cpu = {name: proc.cpu_seconds() - cpu_before[name] for name, proc in procs.items()}
    figures.paced[via] = s
    for name, (sampler, path) in samplers.items():
        sampler.wait(timeout=60)
        if path.exists():
            title = f"{name}, first 8 s of {count} paced streams"
            figures.profiles += hotpath.render(title, hotpath.summarise(path)) + "\n"
    rss = ", ".join(
        f"{name} {b / 1024:.0f} → peak {p / 1024:.0f} → {a / 1024:.0f} MiB"
        for name, (b, p, a) in s.rss_kib.items()
    )
    line = (
        f"- {s.count} concurrent paced streams via {via} (ideal 1.05 s each): errors "
        f"{s.errors}, duration p50 {s.p50_s:.2f} s, p99 {s.p99_s:.2f} s, peak in flight "
        f"{s.peak_inflight}; nfrx RSS {rss}"
    )
    if via == "nfrx":
        events = max((s.count - s.errors) * PACED_EVENTS, 1)
        figures.paced_cpu_us = {name: seconds / events * 1e6 for name, seconds in cpu.items()}
        line += "; CPU per relayed event: " + ", ".join(
            f"{name} {us:.1f} µs" for name, us in figures.paced_cpu_us.items()
        )
    figures.say(line)
    for kind, n in s.error_kinds.items():
        figures.say(f"  - {n} times: {kind}")
