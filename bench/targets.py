"""The targets of issue 16 as one Markdown table: each figure before and after, and its verdict.

A figure is None when its run did not measure it (``--no-scenarios``); its verdict is then
"n/a". Verdicts are printed only when the caller says the machine was quiet enough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from run import Row, RunResult

Figure: TypeAlias = tuple[float, str] | None
"""(value the target is checked on, text to print), or None when not measured."""


@attrs.frozen
class Target:
    cell: str
    goal: str
    figure: Callable[[RunResult], Figure]
    met: Callable[[float, RunResult], bool] | None
    """None: reported, no target."""


def _row(rows: list[Row], kind: str, connections: int) -> Row:
    return next(r for r in rows if r.kind == kind and r.connections == connections)


def _long(connections: int) -> Callable[[RunResult], Figure]:
    def figure(run: RunResult) -> Figure:
        row = _row(run.long_rows, "long", connections)
        ratio = row.ratio("nginx")
        return ratio, f"{ratio:.3f} ({row.nfrx.events_per_s:,.0f} events/s)"

    return figure


def _vs_ceiling(kind: str) -> Callable[[RunResult], Figure]:
    def figure(run: RunResult) -> Figure:
        nfrx = _row(run.rows, kind, 32).nfrx.result.rps
        ratio = nfrx / run.ceiling[kind, 32].result.rps
        return ratio, f"{ratio:.3f} ({nfrx:,.0f} rps)"

    return figure


def _ceiling_added(run: RunResult, kind: str) -> float:
    nginx = _row(run.rows, kind, 1).cells["nginx"].result.p50_ms
    return run.ceiling[kind, 1].result.p50_ms - nginx


def _added_p50(kind: str) -> Callable[[RunResult], Figure]:
    def figure(run: RunResult) -> Figure:
        added = _row(run.rows, kind, 1).added_p50
        return added, f"+{added:.3f} ms (ceiling +{_ceiling_added(run, kind):.3f} ms)"

    return figure


def _added_ok(kind: str) -> Callable[[float, RunResult], bool]:
    return lambda added, run: added <= 0.8 or added <= 2 * _ceiling_added(run, kind)


def _paced_p50(run: RunResult) -> Figure:
    if run.scenarios is None:
        return None
    paced = run.scenarios.paced
    ratio = paced["nfrx"].p50_s / paced["nginx"].p50_s
    return ratio, f"{ratio:.2f}x ({paced['nfrx'].p50_s:.2f} s vs {paced['nginx'].p50_s:.2f} s)"


def _paced_cpu(name: str) -> Callable[[RunResult], Figure]:
    def figure(run: RunResult) -> Figure:
        if run.scenarios is None:
            return None
        us = run.scenarios.paced_cpu_us[name]
        return us, f"{us:.1f} µs"

    return figure


def _cancel(run: RunResult) -> Figure:
    if run.scenarios is None:
        return None
    ms = run.scenarios.cancel_p50_ms["nfrx"]
    return ms, f"{ms:.2f} ms (nginx {run.scenarios.cancel_p50_ms['nginx']:.2f} ms)"


def _cpu_per_request(kind: str, name: str) -> Callable[[RunResult], Figure]:
    def figure(run: RunResult) -> Figure:
        us = _row(run.rows, kind, 32).nfrx.cpu_us[name]
        if name != "server":
            return us, f"{us:,.0f} µs"
        return us, f"{us:,.0f} µs (ceiling {run.ceiling[kind, 32].cpu_us['ceiling']:,.0f} µs)"

    return figure


TARGETS = (
    Target("long stream (500 events), events/s vs nginx, c=1", "≥ 0.25", _long(1),
           lambda v, _: v >= 0.25),
    Target("long stream (500 events), events/s vs nginx, c=32", "≥ 0.25", _long(32),
           lambda v, _: v >= 0.25),
    Target("long stream (500 events), events/s vs nginx, c=256", "(reported)", _long(256), None),
    Target("JSON c=32 rps vs the ceiling", "≥ 0.75", _vs_ceiling("JSON"), lambda v, _: v >= 0.75),
    Target("SSE (4 events) c=32 rps vs the ceiling", "≥ 0.75", _vs_ceiling("SSE"),
           lambda v, _: v >= 0.75),
    Target("added p50 at c=1 over nginx, JSON", "≤ 0.8 ms or ≤ 2x the ceiling's",
           _added_p50("JSON"), _added_ok("JSON")),
    Target("added p50 at c=1 over nginx, SSE", "≤ 0.8 ms or ≤ 2x the ceiling's",
           _added_p50("SSE"), _added_ok("SSE")),
    Target("2,000 paced streams, p50 completion vs nginx's", "≤ 1.5x", _paced_p50,
           lambda v, _: v <= 1.5),
    Target("server CPU per relayed event (paced streams)", "≤ 35 µs", _paced_cpu("server"),
           lambda v, _: v <= 35),
    Target("agent CPU per relayed event (paced streams)", "(reported)", _paced_cpu("agent"), None),
    Target("client close → backend close, p50", "≤ 1 ms", _cancel, lambda v, _: v <= 1.0),
    Target("server CPU per JSON request, c=32", "(reported)", _cpu_per_request("JSON", "server"),
           None),
    Target("agent CPU per JSON request, c=32", "(reported)", _cpu_per_request("JSON", "agent"),
           None),
)  # fmt: skip


def table(before: RunResult | None, after: RunResult, *, verdict: bool) -> str:
    """The targets table; ``before`` adds a column; ``verdict`` adds PASS/FAIL on ``after``."""
    head = ["cell"] + (["before"] if before is not None else []) + ["after", "target"]
    if verdict:
        head.append("verdict")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for target in TARGETS:
        cells = [target.cell]
        if before is not None:
            cells.append(_text(target.figure(before)))
        figure = target.figure(after)
        cells += [_text(figure), target.goal]
        if verdict:
            if target.met is None:
                cells.append("")
            elif figure is None:
                cells.append("n/a")
            else:
                cells.append("PASS" if target.met(figure[0], after) else "FAIL")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _text(figure: Figure) -> str:
    return "n/a" if figure is None else figure[1]
