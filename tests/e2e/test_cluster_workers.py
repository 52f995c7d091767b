"""``nfrx serve --workers N``: N instances on one port, supervised; refused without Redis."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import trio

from tests.e2e.cluster import chat, contents, wait_tunnels
from tests.e2e.harness import NfrxProcess, nfrx, run_agent, run_server
from tests.fixtures.backend import FixtureBackend

CAP = 90.0
LISTENING = "nfrx serve listening on"
THREAD_IDLE = 10.0
"""Seconds an idle thread of trio's thread cache lives (``trio._core._thread_cache``)."""


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


async def wait_gone(pid: int) -> None:
    """Until process ``pid`` has exited (its pidfd becomes readable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def wait_listening(proc: NfrxProcess, count: int) -> None:
    """Until ``count`` workers said they listen (each says so once)."""
    start = 0
    for _ in range(count):
        await proc.wait_for_line(LISTENING, start=start)
        start = next(i for i, line in enumerate(proc.lines) if i >= start and LISTENING in line)
        start += 1


async def test_workers_need_redis_and_say_why() -> None:
    async with nfrx("server", ["serve", "--port", "0", "--workers", "2"], {}) as server:
        assert await server.wait_exit() == 2
    assert re.search(r"WORKERS: 2 workers need REDIS_URL", server.output()), server.output()


async def test_workers_share_one_port_and_stop_together(
    redis_url: str, backend: FixtureBackend
) -> None:
    env = {"REDIS_URL": redis_url, "INSTANCE_ID": "w"}
    with trio.fail_after(CAP):
        async with run_server(env=env, args=["--workers", "2"]) as server:
            started = trio.current_time()
            await server.proc.wait_for_line(r"instances of the gateway: w-0, w-1$")
            workers = children(server.proc.process.pid)
            assert len(workers) == 2
            # Each in a session of its own: a terminal's Ctrl-C reaches the parent only, which
            # passes one SIGTERM on (the process group's SIGINT would make it two: no drain).
            assert all(os.getsid(pid) == pid for pid in workers)
            async with run_agent(server, backend.base_url) as agent:
                await wait_tunnels(agent, ["w-0", "w-1"])
                async with httpx.AsyncClient(timeout=30) as http:
                    for n in range(6):  # new connections: the kernel spreads them
                        response = await http.post(
                            f"{server.api_base}/chat/completions",
                            json=chat(f"w {n}"),
                            headers={**server.headers(), "Connection": "close"},
                        )
                        assert response.status_code == 200, response.text
                assert contents(backend) == [f"w {n}" for n in range(6)]
            # The subject, not a readiness wait: workers forked from a thread of trio's cache
            # got the parent-death signal when it ended, after THREAD_IDLE seconds.
            await trio.sleep(max(0.0, started + THREAD_IDLE + 1 - trio.current_time()))
            assert children(server.proc.process.pid) == workers
            assert "SIGTERM: draining" not in server.proc.output()
            server.proc.signal(signal.SIGTERM)
            assert await server.proc.wait_exit() == 0
            assert not [pid for pid in workers if alive(pid)]


async def test_workers_do_not_outlive_a_killed_parent(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "INSTANCE_ID": "k"}
    with trio.fail_after(CAP):
        async with run_server(env=env, args=["--workers", "2"]) as server:
            await server.proc.wait_for_line(r"instances of the gateway: k-0, k-1$")
            await wait_listening(server.proc, 2)  # each worker handles signals from then on
            workers = children(server.proc.process.pid)
            assert len(workers) == 2
            server.proc.process.kill()
            await server.proc.wait_exit()
            # Each worker got SIGTERM from the kernel (PR_SET_PDEATHSIG), left the gateway and
            # exited: the output pipe they inherited closes once the last one is gone.
            await server.proc.wait_for_line(r"instance k-0 left the gateway")
            await server.proc.wait_for_line(r"instance k-1 left the gateway")
            await server.proc.wait_eof()
            # Their output closed; each process ends a moment later (within the cap).
            for pid in workers:
                await wait_gone(pid)
