"""``nfrx status``: the readable tables (from a sample /api/state document), and the command run
as a process against a real server and a real agent's status API."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import trio

from nfrx.cli.status import agent_url, render_agent, render_server, state_url
from tests.e2e.harness import Server, clean_env
from tests.e2e.test_agent_status import HANG_GUARD, status_agent
from tests.fixtures.backend import FixtureBackend

SAMPLE_STATE = {
    "server": {
        "version": "0.1.0",
        "build_sha": "abc1234",
        "build_date": "2026-01-02T03:04:05Z",
        "started_at": "2026-01-02T03:04:05.000Z",
        "uptime_seconds": 3725.5,
        "draining": False,
        "plugins": ["llm"],
    },
    "plugins": {
        "llm": {
            "queue": {"length": 3, "capacity": 100},
            "summary": {"connected": 2, "working": 1, "idle": 1, "not_ready": 0, "draining": 0},
            "agents": [
                {
                    "id": "gpu-box-1a2b",
                    "name": "gpu-box",
                    "version": "0.1.0",
                    "status": "working",
                    "models": ["llama3:8b", "qwen2:7b"],
                    "max_concurrency": 4,
                    "inflight": 2,
                    "processed_total": 120,
                    "failures_total": 3,
                    "cancelled_total": 5,
                    "processing_ms_total": 5000.0,
                    "avg_processing_ms": 40.65,
                    "input_tokens_total": 1500,
                    "output_tokens_total": 700,
                    "embedding_batch_size": 0,
                    "connected_at": "2026-01-02T03:04:06.000Z",
                    "last_heartbeat": "2026-01-02T04:04:06.000Z",
                },
                {
                    "id": "laptop-9f9f",
                    "name": "laptop",
                    "version": "0.1.0",
                    "status": "idle",
                    "models": [],
                    "max_concurrency": 1,
                    "inflight": 0,
                    "processed_total": 0,
                    "failures_total": 0,
                    "cancelled_total": 0,
                    "processing_ms_total": 0.0,
                    "avg_processing_ms": 0.0,
                    "input_tokens_total": 0,
                    "output_tokens_total": 0,
                    "embedding_batch_size": 16,
                    "connected_at": "2026-01-02T03:04:07.000Z",
                    "last_heartbeat": "2026-01-02T04:04:07.000Z",
                },
            ],
            "models": [
                {
                    "id": "llama3:8b",
                    "agents": ["gpu-box"],
                    "input_tokens_total": 1000,
                    "output_tokens_total": 500,
                },
                {"id": "qwen2:7b", "agents": [], "input_tokens_total": 9, "output_tokens_total": 1},
            ],
        }
    },
}


def cells(line: str) -> list[str]:
    """The cells of a table row (columns are two or more spaces apart)."""
    return re.split(r" {2,}", line.strip())


def test_server_tables() -> None:
    text = render_server(SAMPLE_STATE)
    lines = text.splitlines()
    assert lines[0] == "nfrx server 0.1.0 (sha abc1234), up 1h02m"
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == [
        "NAME",
        "ID",
        "STATUS",
        "MODELS",
        "INFLIGHT",
        "PROCESSED",
        "FAILURES",
        "CANCELLED",
        "TOKENS",
        "IN/OUT",
    ]
    gpu = next(line for line in lines if line.startswith("gpu-box"))
    assert cells(gpu) == [
        "gpu-box",
        "gpu-box-1a2b",
        "working",
        "llama3:8b, qwen2:7b",
        "2/4",
        "120",
        "3",
        "5",
        "1500/700",
    ]
    # Columns line up: every row starts its STATUS cell where the header does.
    laptop = next(line for line in lines if line.startswith("laptop"))
    column = header.index("STATUS")
    assert gpu[column:].startswith("working")
    assert laptop[column:].startswith("idle")
    assert "llm: agents (2)" in lines
    assert "llm: models (2)" in lines
    model = next(line for line in lines if line.startswith("llama3:8b"))
    assert model.split() == ["llama3:8b", "gpu-box", "1000/500"]
    assert next(line for line in lines if line.startswith("qwen2:7b")).split() == [
        "qwen2:7b",
        "-",
        "9/1",
    ]
    assert lines[-1] == "llm: queue 3/100 waiting"


def test_server_tables_of_several_instances() -> None:
    state = json.loads(json.dumps(SAMPLE_STATE))
    state["server"] |= {"instance": "b", "degraded": True}
    state["instances"] = [
        {
            "id": "a",
            "url": "ws://10.0.0.1:8080",
            "state": "draining",
            "version": "0.1.0",
            "started_at": "2026-01-02T03:04:05.000Z",
            "this": False,
        },
        {
            "id": "b",
            "url": "ws://10.0.0.2:8080",
            "state": "degraded",
            "version": "0.1.0",
            "started_at": "2026-01-02T03:04:05.000Z",
            "this": True,
        },
    ]
    for agent in state["plugins"]["llm"]["agents"]:
        agent["instances"] = ["a", "b"]
    lines = render_server(state).splitlines()
    assert lines[0].endswith("; instance b, DEGRADED (Redis unreachable: serving alone)")
    assert "instances (2)" in lines
    assert cells(next(line for line in lines if line.startswith("a "))) == [
        "a",
        "draining",
        "ws://10.0.0.1:8080",
        "0.1.0",
    ]
    assert next(line for line in lines if line.startswith("b (this)")).split()[2] == "degraded"
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split()[-1] == "INSTANCES"
    gpu = next(line for line in lines if line.startswith("gpu-box"))
    assert cells(gpu)[-1] == "a, b"


def test_server_tables_when_draining_and_empty() -> None:
    state = json.loads(json.dumps(SAMPLE_STATE))
    state["server"]["draining"] = True
    state["plugins"]["llm"]["agents"] = []
    state["plugins"]["llm"]["models"] = []
    text = render_server(state)
    assert text.splitlines()[0].endswith(", DRAINING")
    assert "  (no agents connected)" in text
    assert "  (no models)" in text


def test_relays_on_one_host_are_told_apart_by_id() -> None:
    relay = {
        "name": "host-a",
        "version": "0.1.0",
        "status": "idle",
        "models": [],
        "max_concurrency": 16,
        "inflight": 0,
        "processed_total": 0,
        "failures_total": 0,
        "cancelled_total": 0,
    }
    state = {
        "server": SAMPLE_STATE["server"],
        "plugins": {
            "mcp": {
                "agents": [{**relay, "id": "prefs"}, {**relay, "id": "files"}],
                "relays": [],
            }
        },
    }
    rows = [cells(line) for line in render_server(state).splitlines() if line.startswith("host-a")]
    assert [row[:3] for row in rows] == [["host-a", "prefs", "idle"], ["host-a", "files", "idle"]]


def test_agent_lines() -> None:
    text = render_agent(
        {
            "state": "draining",
            "server_url": "ws://gw/api/llm/connect",
            "backend_url": "http://127.0.0.1:11434/v1",
            "connected_to_server": True,
            "connected_to_backend": False,
            "models": ["a", "b"],
            "current_jobs": 1,
            "max_concurrency": 2,
            "last_error": "",
            "version": "0.1.0",
            "client_id": "box-1",
            "client_name": "box",
        }
    )
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert {k: v.strip() for k, v in lines.items()} == {
        "state": "draining",
        "name": "box",
        "id": "box-1",
        "version": "0.1.0",
        "server": "ws://gw/api/llm/connect",
        "connected to server": "yes",
        "backend": "http://127.0.0.1:11434/v1",
        "connected to backend": "no",
        "models": "a, b",
        "jobs": "1/2",
        "last error": "-",
    }


def test_agent_lines_without_the_token() -> None:
    text = render_agent(
        {
            "state": "connected",
            "connected_to_server": True,
            "connected_to_backend": True,
            "models": [],
            "current_jobs": 0,
            "max_concurrency": 1,
            "version": "0.1.0",
            "client_id": "box-1",
            "client_name": "box",
        }
    )
    lines = {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}
    for label in ("server", "backend", "last error"):
        assert lines[label] == "(needs the control token)"
    assert lines["models"] == "-"


def test_urls() -> None:
    assert state_url("http://h:8080/") == "http://h:8080/api/state"
    assert state_url("http://h:8080/api/state") == "http://h:8080/api/state"
    assert agent_url("127.0.0.1:4555") == "http://127.0.0.1:4555/status"
    assert agent_url("http://127.0.0.1:4555/") == "http://127.0.0.1:4555/status"


# -- the command as a process ------------------------------------------------------------------


async def nfrx_status(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(HANG_GUARD):
        return await trio.run_process(
            [sys.executable, "-m", "nfrx", "status", *args],
            env=clean_env(env or {}),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single stderr line of a failed command (never a traceback)."""
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_agent_status_and_json(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with status_agent(server, backend, tmp_path) as agent:
        readable = await nfrx_status("--agent", agent.url)
        assert readable.returncode == 0, readable.stderr
        lines = readable.stdout.decode().splitlines()
        assert lines[0].split() == ["state:", "connected"]
        assert "models:               fixture-model, org/llama3:8b" in lines
        assert "jobs:                 0/1" in lines

        # The token file is not where this process looks: the reduced view.
        assert "backend:              (needs the control token)" in lines
        raw = await nfrx_status("--agent", agent.url, "--json")
        assert raw.returncode == 0, raw.stderr
        document = json.loads(raw.stdout)
        async with httpx.AsyncClient() as http:
            direct = (await http.get(agent.url + "/status")).json()
        assert document == direct
        assert "backend_url" not in document

        # Where the agent keeps it (XDG_CONFIG_HOME here), or named: the whole document.
        for args, env in (
            ([], {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}),
            (["--token-file", str(agent.token_file)], {}),
        ):
            full = await nfrx_status("--agent", agent.url, *args, env=env)
            assert full.returncode == 0, full.stderr
            assert f"backend:              {backend.base_url}" in full.stdout.decode().splitlines()


async def test_server_status_tables_and_json(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with status_agent(server, backend, tmp_path, env={"CLIENT_ID": "alpha-1"}):
        readable = await nfrx_status("--server", server.url, env={"API_KEY": server.api_key})
        assert readable.returncode == 0, readable.stderr
        lines = readable.stdout.decode().splitlines()
        assert lines[0].startswith("nfrx server ")
        alpha = next(line for line in lines if line.startswith("alpha "))
        assert cells(alpha) == [
            "alpha",
            "alpha-1",
            "idle",
            "fixture-model, org/llama3:8b",
            "0/1",
            "0",
            "0",
            "0",
            "0/0",
        ]
        assert next(line for line in lines if line.startswith("fixture-model")).split() == [
            "fixture-model",
            "alpha",
            "0/0",
        ]
        assert "llm: queue 0/100 waiting" in lines
        assert "asr: queue 0/100 waiting" in lines  # every plugin has its section
        assert lines[-3:] == [  # and the agentless ones a line each
            "jobs: 0 queued, 0 claimed, 0 running, 0 awaiting transfers; 0 completed, "
            "0 failed, 0 canceled; 0 active workers",
            "",
            "transfer: 0 waiting, 0 streaming; 0 completed, 0 failed",
        ]

        raw = await nfrx_status("--server", server.url, "--api-key", server.api_key, "--json")
        assert raw.returncode == 0, raw.stderr
        state = json.loads(raw.stdout)
        assert [a["name"] for a in state["plugins"]["llm"]["agents"]] == ["alpha"]


async def test_errors_are_one_line(server: Server) -> None:
    refused = await nfrx_status("--server", server.url, env={"API_KEY": "wrong"})
    assert refused.returncode == 2
    assert one_line_error(refused) == (
        f"nfrx status: {server.url}/api/state answered 401: check --api-key / API_KEY"
    )
    missing = await nfrx_status("--server", server.url)
    assert missing.returncode == 2
    assert one_line_error(missing).endswith("answered 401: set --api-key or API_KEY")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        unreachable = await nfrx_status("--agent", f"127.0.0.1:{port}")
    assert unreachable.returncode == 1
    assert one_line_error(unreachable).startswith(
        f"nfrx status: cannot reach http://127.0.0.1:{port}/status: ConnectError"
    )

    usage = await nfrx_status("--server", server.url, "--agent", "127.0.0.1:1")
    assert usage.returncode == 2
    assert one_line_error(usage) == "nfrx status: give one of --server URL or --agent URL, not both"


async def test_without_options_it_reads_the_local_server(server: Server, tmp_path: Path) -> None:
    port = server.url.rsplit(":", 1)[1]
    # As `nfrx serve` would: PORT and API_KEY from the environment...
    from_env = await nfrx_status(env={"PORT": port, "API_KEY": server.api_key})
    assert from_env.returncode == 0, from_env.stderr
    assert from_env.stdout.decode().startswith("nfrx server ")
    # ... or from the server's config file (HOST 0.0.0.0 is reached on loopback).
    config = tmp_path / "server.yaml"
    config.write_text(f"host: 0.0.0.0\nport: {port}\napi_key: {server.api_key}\n")
    from_file = await nfrx_status("--json", env={"CONFIG_FILE": str(config)})
    assert from_file.returncode == 0, from_file.stderr
    assert "plugins" in json.loads(from_file.stdout)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]  # bound, not listening: connections are refused
        down = await nfrx_status(env={"PORT": str(free)})
    assert down.returncode == 1
    assert one_line_error(down).startswith(
        f"nfrx status: cannot reach http://127.0.0.1:{free}/api/state: ConnectError"
    )
    bad = await nfrx_status(env={"PORT": "eighty"})
    assert bad.returncode == 2
    assert one_line_error(bad).startswith("nfrx status: configuration error: PORT: ")
    assert one_line_error(bad).endswith("(or give --server URL)")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_watch_refreshes_until_ctrl_c(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with status_agent(server, backend, tmp_path) as agent:
        for args in (["--watch"], ["--interval", "0.1"], ["-w", "--json", "--interval", "0.2"]):
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "nfrx", "status", "--agent", agent.url, *args],
                env=clean_env({}),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # As from a terminal: a test run started in the background (nohup, `&` in a
                # script) inherits SIGINT ignored, and Python then installs no Ctrl-C handler.
                preexec_fn=_default_sigint,
            )
            assert process.stdout is not None
            assert process.stderr is not None
            output = b""
            try:
                with trio.fail_after(HANG_GUARD):
                    # Two refreshes, then Ctrl-C.
                    while output.count(b"connected") < 2:
                        chunk = await process.stdout.receive_some()
                        assert chunk, output
                        output += chunk
                    process.send_signal(signal.SIGINT)
                    assert await process.wait() == 0, args
                    errors = await process.stderr.receive_some()
            finally:
                if process.returncode is None:
                    process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
                    await process.stdout.aclose()
                    await process.stderr.aclose()
            assert errors == b"", errors
            if "--json" in args:
                first = output.split(b"\n")[0]
                assert json.loads(first)["state"] == "connected"
            else:
                assert b"state:                connected" in output
