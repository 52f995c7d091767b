"""nfrx overhead benchmark: one command, everything on 127.0.0.1, everything stopped at the end.

    python bench/run.py [--quick] [--seconds N] [--rev REV] [--profile] [--no-scenarios]
                        [--results FILE]

Starts canned nginx backends (JSON and a 4-event SSE body), a paced SSE backend (Trio), an nginx
reverse proxy with keep-alive upstreams and ``nfrx serve`` with ``nfrx llm`` agents, then runs
``wrk`` against each path (direct, nginx, nfrx) at 1 and 32 connections for JSON and SSE, and
prints one table with requests/s, p50, p99 and the ratios nfrx/direct and nfrx/nginx. Further
scenarios print one figure each: cancellation propagation, queue dispatch, 2,000 paced streams,
slow reader. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
from pathlib import Path

import attrs
import hotpath
import scenarios
import trio
from loadgen import WrkResult, run_wrk
from stack import API_KEY, BENCH_DIR, Stack, free_port, machine, wait_port

KINDS = (("JSON", "canned", False), ("SSE", "canned-sse", True))
PATHS = ("direct", "nginx", "nfrx")
CONNECTIONS = (1, 32)
TARGET_RATIO = 0.10
TARGET_ADDED_P50_MS = 1.0


@attrs.frozen
class Row:
    kind: str
    connections: int
    results: dict[str, WrkResult]

    @property
    def vs_direct(self) -> float:
        return self.results["nfrx"].rps / self.results["direct"].rps

    @property
    def vs_nginx(self) -> float:
        return self.results["nfrx"].rps / self.results["nginx"].rps

    @property
    def added_p50(self) -> float:
        return self.results["nfrx"].p50_ms - self.results["nginx"].p50_ms

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results.values())


def measure(stack: Stack, seconds: int) -> list[Row]:
    rows = []
    for kind, model, stream in KINDS:
        per_conn: dict[int, dict[str, WrkResult]] = {c: {} for c in CONNECTIONS}
        for path in PATHS:
            url = stack.url(path, model=model)
            run_wrk(url, connections=32, seconds=1, model=model, stream=stream, auth=API_KEY)
            for connections in CONNECTIONS:
                stack.check_alive()
                result = run_wrk(
                    url,
                    connections=connections,
                    seconds=seconds,
                    model=model,
                    stream=stream,
                    auth=API_KEY,
                )
                per_conn[connections][path] = result
                note = f"  {kind:4} c={connections:<2} {path:6} {result.rps:9.0f} rps"
                note += f"  p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
                note += f"  errors {result.errors}"
                print(note, flush=True)
        rows += [Row(kind, c, per_conn[c]) for c in CONNECTIONS]
    return rows


def table(rows: list[Row]) -> str:
    def cell(r: WrkResult) -> str:
        return f"{r.rps:,.0f} · {r.p50_ms:.3f} / {r.p99_ms:.2f}"

    lines = [
        "| body | conns | direct rps · p50 / p99 ms | nginx rps · p50 / p99 ms "
        "| nfrx rps · p50 / p99 ms | nfrx/direct | nfrx/nginx | nfrx p50 - nginx p50 | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row.results
        lines.append(
            f"| {row.kind} | {row.connections} | {cell(r['direct'])} | {cell(r['nginx'])} "
            f"| {cell(r['nfrx'])} | {row.vs_direct:.3f} | {row.vs_nginx:.3f} "
            f"| {row.added_p50:+.3f} ms | {row.errors} |"
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> list[str]:
    out = []
    for row in rows:
        ok = row.vs_nginx >= TARGET_RATIO
        out.append(
            f"{'PASS' if ok else 'FAIL'}: {row.kind} c={row.connections} nfrx/nginx "
            f"{row.vs_nginx:.3f} (target ≥ {TARGET_RATIO})"
        )
        if row.connections == 1:
            ok = row.added_p50 <= TARGET_ADDED_P50_MS
            out.append(
                f"{'PASS' if ok else 'FAIL'}: {row.kind} c=1 p50 added over nginx "
                f"{row.added_p50:.3f} ms (target ≤ {TARGET_ADDED_P50_MS} ms)"
            )
    return out


def ceiling(stack: Stack, seconds: int, rows: list[Row]) -> list[str]:
    """hypercorn serving a bare ASGI app (ceiling_app.py) with the JSON body, vs nginx."""
    port = free_port()
    proc = stack._spawn("ceiling", [sys.executable, str(BENCH_DIR / "ceiling_app.py"), str(port)])
    wait_port(port, stack)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    run_wrk(url, connections=32, seconds=1, model="canned", stream=False)
    lines = []
    nginx = {r.connections: r.results["nginx"] for r in rows if r.kind == "JSON"}
    for connections in CONNECTIONS:
        result = run_wrk(
            url, connections=connections, seconds=seconds, model="canned", stream=False
        )
        lines.append(
            f"- ceiling, JSON c={connections}: hypercorn (trio worker) serving a bare ASGI app "
            f"that answers at once: {result.rps:,.0f} rps, p50 {result.p50_ms:.3f} ms = "
            f"{result.rps / nginx[connections].rps:.3f} of nginx"
        )
        print(lines[-1], flush=True)
    proc.popen.terminate()
    proc.popen.wait(5)
    return lines


def profile(stack: Stack, seconds: int, out_dir: Path) -> str:
    """Sample the server and the ``canned`` agent with py-spy during the JSON rows."""
    if not hotpath.available():
        return "py-spy not found (pip install py-spy): no profiles.\n"
    assert stack.server is not None
    url = stack.url("nfrx", model="canned")
    parts = []
    for connections in CONNECTIONS:
        targets = {"server": stack.server, "agent": stack.agents["canned"]}
        files = {name: out_dir / f"{name}-json-c{connections}.folded" for name in targets}
        samplers = [hotpath.start(proc.pid, seconds, files[name]) for name, proc in targets.items()]
        result = run_wrk(
            url,
            connections=connections,
            seconds=seconds + 1,
            model="canned",
            stream=False,
            auth=API_KEY,
        )
        for sampler in samplers:
            sampler.wait(timeout=seconds + 30)
        parts.append(
            f"### JSON, {connections} connection(s), nfrx under py-spy: {result.rps:,.0f} rps, "
            f"p50 {result.p50_ms:.3f} ms\n"
        )
        for name in targets:
            if files[name].exists():
                parts.append(hotpath.render(name, hotpath.summarise(files[name])))
    parts.append(f"Collapsed stacks (flamegraph.pl / speedscope input): {out_dir}\n")
    return "\n".join(parts)


def run_scenarios(stack: Stack, quick: bool, out_dir: Path | None) -> tuple[list[str], str]:
    """One figure per scenario; with ``out_dir``, py-spy the nfrx paced streams too."""
    figures: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        figures.append(text)

    for via in ("nginx", "nfrx"):
        c = trio.run(scenarios.cancellation, stack, via, 200)
        say(
            f"- cancellation via {via}: client close → backend sees close, p50 "
            f"{c.p50_ms:.2f} ms, p99 {c.p99_ms:.2f} ms ({c.seen}/{c.count} closes seen)"
        )
    q = trio.run(scenarios.queue_dispatch, stack, 200)
    say(
        f"- queue dispatch: {q.count} simultaneous requests onto a capacity-1 agent: "
        f"{q.wall_s:.2f} s wall, {q.per_request_ms:.2f} ms per request "
        f"(one at a time: {q.single_ms:.2f} ms each), errors {q.errors}"
    )
    count = 500 if quick else 2000
    profile_text = ""
    for via in ("nginx", "nfrx"):
        samplers = {}
        if via == "nfrx" and out_dir is not None and hotpath.available():
            assert stack.server is not None
            targets = {"server": stack.server, "agent": stack.agents["paced"]}
            files = {name: out_dir / f"{name}-paced-{count}.folded" for name in targets}
            samplers = {
                name: hotpath.start(proc.pid, 8, files[name]) for name, proc in targets.items()
            }
        s = trio.run(scenarios.paced_streams, stack, via, count)
        for name, sampler in samplers.items():
            sampler.wait(timeout=60)
            if files[name].exists():
                title = f"{name}, first 8 s of {count} paced streams"
                profile_text += hotpath.render(title, hotpath.summarise(files[name])) + "\n"
        rss = ", ".join(
            f"{name} {b / 1024:.0f} → peak {p / 1024:.0f} → {a / 1024:.0f} MiB"
            for name, (b, p, a) in s.rss_kib.items()
        )
        say(
            f"- {s.count} concurrent paced streams via {via} (ideal 1.05 s each): errors "
            f"{s.errors}, duration p50 {s.p50_s:.2f} s, p99 {s.p99_s:.2f} s, peak in flight "
            f"{s.peak_inflight}; nfrx RSS {rss}"
        )
        for kind, n in s.error_kinds.items():
            say(f"  - {n} times: {kind}")
    r = trio.run(scenarios.slow_reader, stack, 3.0)
    rss = ", ".join(
        f"{name} {b / 1024:.0f} → {p / 1024:.0f} MiB" for name, (b, p) in r.rss_kib.items()
    )
    say(
        f"- slow reader (256 MiB stream, read {r.read_kib} KiB, then stalled {r.stalled_s:.0f} s): "
        f"RSS {rss}"
    )
    return figures, profile_text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per cell, 500 streams")
    parser.add_argument("--seconds", type=int, help="seconds per wrk cell (default 5)")
    parser.add_argument("--rev", help="benchmark nfrx as of this git revision (e.g. HEAD)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the server and agent (JSON rows, paced streams)",
    )
    parser.add_argument("--no-scenarios", action="store_true", help="only the wrk table")
    parser.add_argument("--results", type=Path, help="also write a Markdown report here")
    args = parser.parse_args()
    seconds = args.seconds or (2 if args.quick else 5)
    out_dir = Path(tempfile.mkdtemp(prefix="nfrx-bench-out-"))
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    info = machine()
    print(f"nproc {info['nproc']}, {info['cpu']}; load average {load_before[0]:.2f}", flush=True)
    with Stack(rev=args.rev) as stack:
        stack.start()
        rows = measure(stack, seconds)
        limits = ceiling(stack, seconds, rows)
        figures, stream_profiles = (
            ([], "")
            if args.no_scenarios
            else run_scenarios(stack, args.quick, out_dir if args.profile else None)
        )
        profiles = profile(stack, seconds, out_dir) if args.profile else ""
        if stream_profiles:
            profiles += "\n### Paced streams through nfrx, under py-spy\n\n" + stream_profiles
    load_after = os.getloadavg()
    report = [
        "",
        table(rows),
        "",
        *verdict(rows),
        *limits,
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"(2 cores: anything else running skews these figures)",
    ]
    print("\n".join(report))
    if profiles:
        print("\n" + profiles)
    if args.results:
        command = "python bench/run.py " + shlex.join(sys.argv[1:])
        args.results.write_text(
            "\n".join(
                [
                    f"# nfrx benchmark, {started:%Y-%m-%d %H:%M} UTC",
                    "",
                    f"- machine: {info['nproc']} CPUs, {info['cpu']}",
                    f"- command: `{command.strip()}`",
                    f"- {seconds} s per wrk cell after a 1 s warm-up per path and body",
                    *report[2:],
                    "",
                    "## Table",
                    "",
                    table(rows),
                    "",
                    "## Scenarios",
                    "",
                    *figures,
                    "",
                    "## Profiles",
                    "",
                    profiles or "(not run)",
                ]
            )
            + "\n"
        )
        print(f"report written to {args.results}")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
