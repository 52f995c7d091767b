"""nfrx overhead benchmark: one command, everything on 127.0.0.1, everything stopped at the end.

    python bench/run.py [--quick] [--seconds N] [--rev REV] [--before REV] [--profile]
                        [--no-scenarios] [--results FILE]

Starts canned nginx backends (JSON and a 4-event SSE body), a paced SSE backend (Trio, which also
plays the 500-event *long* stream), an nginx reverse proxy with keep-alive upstreams and
``nfrx serve`` with ``nfrx llm`` agents, then runs ``wrk`` against each path (direct, nginx,
nfrx): JSON and SSE at 1 and 32 connections, the long stream at 1, 32 and 256, reading the CPU
each nfrx process spent per request from ``/proc``; the bare-hypercorn ceiling in the same run;
then the scenarios (cancellation, queue dispatch, 2,000 paced streams, slow reader). With
``--before REV`` all of it runs first against nfrx as of REV, then against the working tree (or
``--rev``), and the issue-16 targets table shows both. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs
import hotpath
import scenarios
import targets
import trio
from backend_leg import LegResult
from backend_leg import measure as measure_leg
from cells import Cell, nfrx_procs, run_cell
from loadgen import run_wrk
from paced_backend import LONG_EVENTS
from stack import API_KEY, BENCH_DIR, Stack, free_port, machine, wait_port

KINDS = (("JSON", "canned", False), ("SSE", "canned-sse", True))
PATHS = ("direct", "nginx", "nfrx")
CONNECTIONS = (1, 32)
LONG_CONNECTIONS = (1, 32, 256)
QUIET_LOAD = 1.5
"""No verdict is printed when the 1-minute load average was above this at the start."""


@attrs.frozen
class Row:
    kind: str
    connections: int
    cells: dict[str, Cell]

    @property
    def nfrx(self) -> Cell:
        return self.cells["nfrx"]

    def ratio(self, path: str) -> float:
        return self.nfrx.events_per_s / self.cells[path].events_per_s

    @property
    def added_p50(self) -> float:
        return self.nfrx.result.p50_ms - self.cells["nginx"].result.p50_ms

    @property
    def errors(self) -> int:
        return sum(c.result.errors for c in self.cells.values())


@attrs.define
class RunResult:
    label: str
    rows: list[Row] = attrs.field(factory=list)
    long_rows: list[Row] = attrs.field(factory=list)
    ceiling: dict[tuple[str, int], Cell] = attrs.field(factory=dict)
    scenarios: scenarios.Figures | None = None
    leg: list[LegResult] = attrs.field(factory=list)
    profiles: str = ""


def measure(stack: Stack, seconds: int) -> list[Row]:
    rows = []
    for kind, model, stream in KINDS:
        per_conn: dict[int, dict[str, Cell]] = {c: {} for c in CONNECTIONS}
        for path in PATHS:
            url = stack.url(path, model=model)
            run_wrk(url, connections=32, seconds=1, model=model, stream=stream, auth=API_KEY)
            procs = nfrx_procs(stack, model) if path == "nfrx" else {}
            for connections in CONNECTIONS:
                stack.check_alive()
                cell = run_cell(
                    url, path, procs, connections=connections, seconds=seconds, model=model,
                    stream=stream,
                )  # fmt: skip
                per_conn[connections][path] = cell
                _note(kind, connections, cell)
        rows += [Row(kind, c, per_conn[c]) for c in CONNECTIONS]
    return rows


def measure_long(stack: Stack, seconds: int) -> list[Row]:
    """The long stream (LONG_EVENTS events, each written on its own) at 1, 32 and 256."""
    per_conn: dict[int, dict[str, Cell]] = {c: {} for c in LONG_CONNECTIONS}
    for path in PATHS:
        url = stack.url(path, model="long")
        run_wrk(url, connections=32, seconds=1, model="long", stream=True, auth=API_KEY)
        procs = nfrx_procs(stack, "paced") if path == "nfrx" else {}
        for connections in LONG_CONNECTIONS:
            stack.check_alive()
            cell = run_cell(
                url, path, procs, connections=connections, seconds=seconds, model="long",
                stream=True, events=LONG_EVENTS,
            )  # fmt: skip
            per_conn[connections][path] = cell
            _note("long", connections, cell)
    return [Row("long", c, per_conn[c]) for c in LONG_CONNECTIONS]


def _note(kind: str, connections: int, cell: Cell) -> None:
    r = cell.result
    note = f"  {kind:4} c={connections:<3} {cell.path:7} {r.rps:9.0f} rps"
    if cell.events > 1:
        note += f" ({cell.events_per_s:,.0f} events/s)"
    note += f"  p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms  errors {r.errors}"
    if cell.cpu_us:
        note += f"  CPU {cell.cpu_text()}"
    print(note, flush=True)


def measure_ceiling(stack: Stack, seconds: int) -> dict[tuple[str, int], Cell]:
    """hypercorn serving a bare ASGI app (ceiling_app.py) with the JSON and the SSE body."""
    port = free_port()
    proc = stack._spawn("ceiling", [sys.executable, str(BENCH_DIR / "ceiling_app.py"), str(port)])
    wait_port(port, stack)
    cells = {}
    for kind, prefix in (("JSON", ""), ("SSE", "/sse")):
        url = f"http://127.0.0.1:{port}{prefix}/v1/chat/completions"
        run_wrk(url, connections=32, seconds=1, model="canned", stream=False)
        for connections in CONNECTIONS:
            cell = run_cell(
                url, "ceiling", {"ceiling": proc}, connections=connections, seconds=seconds,
                model="canned", stream=False, auth="",
            )  # fmt: skip
            cells[kind, connections] = cell
            _note(kind, connections, cell)
    proc.popen.terminate()
    proc.popen.wait(5)
    return cells


def profile(stack: Stack, seconds: int, out_dir: Path) -> str:
    """Sample the server and the agent with py-spy during extra nfrx runs: JSON at 1 and 32
    connections, the long stream at 32."""
    if not hotpath.available():
        return "py-spy not found (pip install py-spy): no profiles.\n"
    parts = []
    runs = [("JSON", "canned", "canned", False, 1), ("JSON", "canned", "canned", False, 32)]
    runs.append(("long stream", "long", "paced", True, 32))
    for title, model, agent, stream, connections in runs:
        url = stack.url("nfrx", model=model)
        targets_ = nfrx_procs(stack, agent)
        tag = f"{model}-c{connections}"
        files = {name: out_dir / f"{name}-{tag}.folded" for name in targets_}
        samplers = [hotpath.start(p.pid, seconds, files[name]) for name, p in targets_.items()]
        result = run_wrk(
            url, connections=connections, seconds=seconds + 1, model=model, stream=stream,
            auth=API_KEY,
        )  # fmt: skip
        for sampler in samplers:
            sampler.wait(timeout=seconds + 30)
        parts.append(
            f"### {title}, {connections} connection(s), nfrx under py-spy: {result.rps:,.0f} "
            f"rps, p50 {result.p50_ms:.3f} ms\n"
        )
        for name in targets_:
            if files[name].exists():
                parts.append(hotpath.render(name, hotpath.summarise(files[name])))
    parts.append(f"Collapsed stacks (flamegraph.pl / speedscope input): {out_dir}\n")
    return "\n".join(parts)


def run_once(
    label: str, rev: str | None, args: argparse.Namespace, out_dir: Path | None
) -> RunResult:
    """Everything, against nfrx as of ``rev`` (None: the working tree); with ``out_dir``,
    py-spy profiles too."""
    print(f"\n== {label} ==", flush=True)
    seconds = args.seconds
    run = RunResult(label)
    with Stack(rev=rev) as stack:
        stack.start()
        run.rows = measure(stack, seconds)
        run.long_rows = measure_long(stack, seconds)
        run.ceiling = measure_ceiling(stack, seconds)
        if not args.no_scenarios:
            run.scenarios = scenarios.run_all(stack, args.quick, out_dir)
        if out_dir is not None:
            run.profiles = profile(stack, seconds, out_dir)
            if run.scenarios is not None and run.scenarios.profiles:
                run.profiles += (
                    "\n### Paced streams through nfrx, under py-spy\n\n" + run.scenarios.profiles
                )
        if rev is None:
            url = f"http://127.0.0.1:{stack.ports.json}/v1/chat/completions"
            run.leg = trio.run(measure_leg, url, 500 if args.quick else 3000)
    return run


def table(rows: list[Row]) -> str:
    def cell(c: Cell) -> str:
        r = c.result
        rate = f"{r.rps:,.0f}" if c.events == 1 else f"{c.events_per_s:,.0f} ev/s"
        return f"{rate} · {r.p50_ms:.3f} / {r.p99_ms:.2f}"

    unit = "rps" if rows[0].nfrx.events == 1 else "events/s"
    lines = [
        f"| body | conns | direct {unit} · p50 / p99 ms | nginx {unit} · p50 / p99 ms "
        f"| nfrx {unit} · p50 / p99 ms | nfrx/direct | nfrx/nginx | nfrx p50 - nginx p50 "
        "| nfrx CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        c = row.cells
        lines.append(
            f"| {row.kind} | {row.connections} | {cell(c['direct'])} | {cell(c['nginx'])} "
            f"| {cell(c['nfrx'])} | {row.ratio('direct'):.3f} | {row.ratio('nginx'):.3f} "
            f"| {row.added_p50:+.3f} ms | {row.nfrx.cpu_text()} | {row.errors} |"
        )
    return "\n".join(lines)


def ceiling_lines(run: RunResult) -> list[str]:
    nginx = {(r.kind, r.connections): r.cells["nginx"] for r in run.rows}
    lines = []
    for (kind, connections), c in run.ceiling.items():
        r = c.result
        lines.append(
            f"- ceiling, {kind} c={connections}: hypercorn (trio worker) serving a bare ASGI app "
            f"that answers at once: {r.rps:,.0f} rps, p50 {r.p50_ms:.3f} ms = "
            f"{r.rps / nginx[kind, connections].result.rps:.3f} of nginx; "
            f"{c.cpu_text()}"
        )
    return lines


def run_report(run: RunResult) -> list[str]:
    out = [f"### {run.label}", "", table(run.rows), "", table(run.long_rows), ""]
    out += ceiling_lines(run)
    if run.scenarios is not None:
        out += ["", *run.scenarios.lines]
    if run.leg:
        out += ["", "Agent -> backend leg alone (bench/backend_leg.py, canned nginx JSON):"]
        out += [
            f"- {r.client}: {r.cpu_us:,.1f} µs CPU per request, {r.rps:,.0f} requests/s"
            for r in run.leg
        ]
    return out


def _describe(rev: str | None) -> str:
    if rev is None:
        head = subprocess.run(
            ["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        return f"after (working tree, HEAD {head})"
    short = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", rev],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return f"before ({rev} = {short})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per cell, 500 streams")
    parser.add_argument("--seconds", type=int, help="seconds per wrk cell (default 5)")
    parser.add_argument("--rev", help="benchmark nfrx as of this git revision (e.g. HEAD)")
    parser.add_argument("--before", help="also benchmark this revision first (e.g. main)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server and agent (see README)"
    )
    parser.add_argument("--no-scenarios", action="store_true", help="only the wrk cells")
    parser.add_argument("--results", type=Path, help="also write a Markdown report here")
    args = parser.parse_args()
    args.seconds = args.seconds or (2 if args.quick else 5)
    out_dir = Path(tempfile.mkdtemp(prefix="nfrx-bench-out-"))
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    info = machine()
    print(f"nproc {info['nproc']}, {info['cpu']}; load average {load_before[0]:.2f}", flush=True)
    plan = ([(_describe(args.before), args.before)] if args.before else []) + [
        (_describe(args.rev) if args.rev else _describe(None), args.rev)
    ]
    # Only the last run (the one under study) is profiled: py-spy costs time, not accuracy.
    runs = [
        run_once(label, rev, args, out_dir if args.profile and i == len(plan) - 1 else None)
        for i, (label, rev) in enumerate(plan)
    ]
    load_after = os.getloadavg()
    quiet = load_before[0] <= QUIET_LOAD
    load_line = (
        f"load average at the start {load_before[0]:.2f}, at the end {load_after[0]:.2f} "
        f"(2 cores: anything else running skews these figures)"
    )
    summary = ["", "## Targets (issue 16)", "", targets.table(runs[0] if args.before else None,
               runs[-1], verdict=quiet), "", load_line]  # fmt: skip
    if not quiet:
        summary.append(
            f"No verdict: the load average was {load_before[0]:.2f} > {QUIET_LOAD} at the start."
        )
    body = ["", "## Runs", ""]
    for run in runs:
        body += [*run_report(run), ""]
    profiles = "\n".join(r.profiles for r in runs if r.profiles)
    print("\n".join(body + summary))
    if profiles:
        print("\n" + profiles)
    if args.results:
        command = "python bench/run.py " + shlex.join(sys.argv[1:])
        header = [
            f"# nfrx benchmark, {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- machine: {info['nproc']} CPUs, {info['cpu']}",
            f"- command: `{command.strip()}`",
            f"- {args.seconds} s per wrk cell after a 1 s warm-up per path and body",
        ]
        args.results.write_text(
            "\n".join([*header, *summary, *body, "## Profiles", "", profiles or "(not run)"]) + "\n"
        )
        print(f"report written to {args.results}")
    return 1 if any(r.errors for run in runs for r in run.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
