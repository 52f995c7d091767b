"""Run ``wrk`` with ``chat.lua`` and read back its one-line summary."""

from __future__ import annotations

import os
import subprocess

import attrs
from stack import BENCH_DIR


@attrs.frozen
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    """Connect, read, write and timeout errors plus non-2xx/3xx answers."""
    seconds: float = 0.0
    """How long the run lasted."""
    bytes_read: int = 0
    """Every byte wrk read, responses still in progress at the end included."""


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    model: str,
    stream: bool,
    auth: str = "",
) -> WrkResult:
    """One bounded wrk run (``seconds`` plus a 30 s safety margin, then it is killed)."""
    threads = 1 if connections == 1 else 2  # 2 cores: wrk must not take both
    env = dict(os.environ, MODEL=model, STREAM="1" if stream else "0", AUTH=auth)
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BENCH_DIR / "chat.lua"),
        url,
    ]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            fields = line.split()
            return WrkResult(
                requests=int(fields[1]),
                rps=float(fields[2]),
                p50_ms=float(fields[3]),
                p99_ms=float(fields[4]),
                mean_ms=float(fields[5]),
                errors=int(fields[6]),
                seconds=int(fields[7]) / 1e6,
                bytes_read=int(fields[8]),
            )
    raise RuntimeError(
        f"wrk printed no summary (rc {done.returncode}):\n{done.stdout}{done.stderr}"
    )
