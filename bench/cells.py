"""One wrk cell with the CPU it cost: requests/s and latency from wrk, and for each process of ours
involved the CPU µs per request read from ``/proc/<pid>/stat`` (utime + stime) around the run.

The CPU figures are what the cell cost each process, warm-up excluded; with a 10 ms clock tick and
5 s cells they are good to about 1 %.
"""

from __future__ import annotations

import socket
import urllib.parse
from typing import TYPE_CHECKING

import attrs
from loadgen import WrkResult, run_wrk
from stack import API_KEY

if TYPE_CHECKING:
    from stack import Proc, Stack


@attrs.frozen
class Cell:
    path: str
    result: WrkResult
    cpu_us: dict[str, float] = attrs.field(factory=dict)
    """Process name ("server", "agent", "ceiling") -> CPU µs per request over the cell."""
    events: int = 1
    """Events per response (to report events/s and CPU per event for streams)."""
    response_bytes: int = 0
    """Bytes of one whole response on this path, head included (streams only)."""

    @property
    def events_per_s(self) -> float:
        """Responses/s times events per response; for a stream, the bytes wrk read per second
        over the bytes per event, which also counts the events of responses still in progress
        when the run ended (at 256 connections a 5 s run completes few 500-event responses).
        The relay's chunk framing varies with its batching: good to a few percent."""
        r = self.result
        if self.response_bytes and r.seconds:
            return r.bytes_read / r.seconds / (self.response_bytes / self.events)
        return r.rps * self.events

    @property
    def cpu_units(self) -> float:
        """What the CPU figures are divided by: requests, or events delivered."""
        if self.events == 1:
            return max(self.result.requests, 1)
        return max(self.events_per_s * self.result.seconds, 1)

    def cpu_text(self) -> str:
        """``server 412 µs, agent 188 µs`` per request (per event for multi-event cells)."""
        unit = "request" if self.events == 1 else "event"
        parts = [f"{name} {us:,.1f} µs" for name, us in self.cpu_us.items()]
        return f"{', '.join(parts)} per {unit}" if parts else ""


def run_cell(
    url: str,
    path: str,
    procs: dict[str, Proc],
    *,
    connections: int,
    seconds: int,
    model: str,
    stream: bool,
    auth: str = API_KEY,
    events: int = 1,
) -> Cell:
    """One measured wrk run against ``url``; ``procs`` are sampled for CPU around it."""
    size = response_bytes(url, model, auth) if events > 1 else 0
    before = {name: proc.cpu_seconds() for name, proc in procs.items()}
    result = run_wrk(
        url, connections=connections, seconds=seconds, model=model, stream=stream, auth=auth
    )
    after = {name: proc.cpu_seconds() for name, proc in procs.items()}
    cell = Cell(path, result, {}, events, size)
    units = cell.cpu_units
    cpu = {name: (after[name] - before[name]) / units * 1e6 for name in procs}
    return attrs.evolve(cell, cpu_us=cpu)


def response_bytes(url: str, model: str, auth: str) -> int:
    """The size of one whole streamed (chunked) response from ``url``, head included, as wrk
    would read it (the same request ``chat.lua`` sends)."""
    parts = urllib.parse.urlsplit(url)
    body = (
        f'{{"model":"{model}","messages":[{{"role":"user","content":"Say hello"}}],'
        '"max_tokens":16,"stream":true}'
    ).encode()
    head = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if auth:
        head.append(f"Authorization: Bearer {auth}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        while not received.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    return len(received)


def nfrx_procs(stack: Stack, agent: str) -> dict[str, Proc]:
    assert stack.server is not None
    return {"server": stack.server, "agent": stack.agents[agent]}
