"""Sample a running process with ``py-spy`` and summarise where its CPU time goes.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``), one line per
distinct stack; idle stacks (a thread parked in ``epoll_wait``) are left out by py-spy, so the
percentages are shares of the time the process was on a CPU.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::\d+)?\)$")

BUCKETS = (
    ("nfrx", ("/nfrx/",)),
    ("hypercorn", ("/hypercorn/",)),
    ("quart / werkzeug / flask", ("/quart/", "/quart_trio/", "/werkzeug/", "/flask/")),
    ("h11", ("/h11/",)),
    ("wsproto / trio-websocket", ("/wsproto/", "/trio_websocket/")),
    ("httpx / httpcore", ("/httpx/", "/httpcore/")),
    ("trio", ("/trio/",)),
    ("attrs / cattrs", ("/attr/", "/attrs/", "/cattrs/")),
    ("logging", ("/logging/",)),
    ("json", ("/json/",)),
)


def available() -> bool:
    return shutil.which("py-spy") is not None


def start(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """Begin sampling ``pid`` for ``seconds`` into ``out`` (collapsed stacks); wait on the
    returned process (it ends by itself)."""
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _entry_point(file: str) -> bool:
    """Frames every sample has (the CLI and ``python -m``): no information."""
    return "nfrx/cli/" in file or file.endswith("nfrx/__main__.py")


def _key(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["func"], match["file"]


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/nfrx-bench-", "/lib/python3"):
        if marker in file:
            tail = file.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker != "/site-packages/" else tail
    return file


def _bucket(file: str) -> str:
    file = "/" + file  # py-spy prints site-packages and checkout paths relative
    for name, needles in BUCKETS:
        if any(needle in file for needle in needles):
            return name
    return "stdlib and other"


def _owner(frames: list[tuple[str, str]]) -> str:
    """The package that asked for this sample's work: the innermost frame outside Trio's
    scheduler and the stdlib (their time is charged to whoever called them)."""
    for _, file in reversed(frames):
        bucket = _bucket(file)
        if bucket not in ("trio", "stdlib and other"):
            return bucket
    return _bucket(frames[-1][1])


@attrs.frozen
class Summary:
    samples: int
    self_top: list[tuple[str, float]]
    """(function (file), % of samples where it is the innermost frame)"""
    inclusive_top: list[tuple[str, float]]
    """(function (file), % of samples where it is anywhere on the stack)"""
    buckets: list[tuple[str, float]]
    """(package, % of samples whose innermost frame is in it)"""
    owners: list[tuple[str, float]]
    """(package, % of samples charged to it by :func:`_owner`)"""


def summarise(path: Path, top: int = 12, inclusive_filter: str = "/nfrx/") -> Summary:
    """Self and inclusive shares per function; inclusive ones only for frames whose file
    contains ``inclusive_filter`` (the code we own), which is where a fix would go."""
    self_counts: collections.Counter[tuple[str, str]] = collections.Counter()
    incl_counts: collections.Counter[tuple[str, str]] = collections.Counter()
    bucket_counts: collections.Counter[str] = collections.Counter()
    owner_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_key(f) for f in stack.split(";")]
        # The first frame is "process ..." / "thread ..." in some py-spy versions; skip non-code.
        frames = [f for f in frames if f[1]]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        bucket_counts[_bucket(frames[-1][1])] += count
        owner_counts[_owner(frames)] += count
        for frame in set(frames):
            if inclusive_filter in "/" + frame[1] and not _entry_point(frame[1]):
                incl_counts[frame] += count

    def pct(counter: collections.Counter[tuple[str, str]]) -> list[tuple[str, float]]:
        return [
            (f"{func} ({_short(file)})", 100 * n / total)
            for (func, file), n in counter.most_common(top)
        ]

    return Summary(
        total,
        pct(self_counts) if total else [],
        pct(incl_counts) if total else [],
        [(name, 100 * n / total) for name, n in bucket_counts.most_common()] if total else [],
        [(name, 100 * n / total) for name, n in owner_counts.most_common()] if total else [],
    )


def render(title: str, summary: Summary) -> str:
    lines = [f"#### {title} ({summary.samples} samples)", ""]
    lines.append(
        "CPU by package, innermost frame: "
        + ", ".join(f"{name} {share:.0f} %" for name, share in summary.buckets if share >= 1)
    )
    lines.append("")
    lines.append(
        "CPU by calling package (Trio and stdlib time charged to their caller): "
        + ", ".join(f"{name} {share:.0f} %" for name, share in summary.owners if share >= 1)
    )
    lines += ["", "| self % | function (innermost frame) |", "|---:|---|"]
    lines += [f"| {share:.1f} | `{name}` |" for name, share in summary.self_top]
    lines += ["", "| incl. % | nfrx function (anywhere on the stack) |", "|---:|---|"]
    lines += [f"| {share:.1f} | `{name}` |" for name, share in summary.inclusive_top]
    return "\n".join(lines) + "\n"
