"""One wrk cell with the CPU it cost: requests/s and latency from wrk, and for each process of ours
involved the CPU µs per request read from ``/proc/<pid>/stat`` (utime + stime) around the run.

The CPU figures are what the cell cost each process, warm-up excluded; with a 10 ms clock tick and
5 s cells they are good to about 1 %.
"""

from __future__ import annotations

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

    @property
    def events_per_s(self) -> float:
        return self.result.rps * self.events

    def cpu_per_event(self, name: str) -> float:
        return self.cpu_us[name] / self.events

    def cpu_text(self) -> str:
        """``server 412 µs, agent 188 µs`` per request (per event for multi-event cells)."""
        unit = "request" if self.events == 1 else "event"
        parts = [f"{name} {us / self.events:,.1f} µs" for name, us in self.cpu_us.items()]
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
    before = {name: proc.cpu_seconds() for name, proc in procs.items()}
    result = run_wrk(
        url, connections=connections, seconds=seconds, model=model, stream=stream, auth=auth
    )
    after = {name: proc.cpu_seconds() for name, proc in procs.items()}
    requests = max(result.requests, 1)
    cpu = {name: (after[name] - before[name]) / requests * 1e6 for name in procs}
    return Cell(path, result, cpu, events)


def nfrx_procs(stack: Stack, agent: str) -> dict[str, Proc]:
    assert stack.server is not None
    return {"server": stack.server, "agent": stack.agents[agent]}
