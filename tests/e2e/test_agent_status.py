"""The agent's local status and control API (STATUS_ADDR) and its metrics (METRICS_PORT), through
real processes: a server, an agent and a fixture backend on 127.0.0.1.

The control token lands in a temporary directory (``XDG_CONFIG_HOME`` or ``CONFIG_FILE``'s
directory), never in the user's real config directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from nfrx._version import __version__
from tests.e2e.harness import NfrxProcess, Server, run_agent
from tests.fixtures.backend import FixtureBackend

MESSAGES = [{"role": "user", "content": "hi"}]
HANG_GUARD = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class StatusAgent:
    proc: NfrxProcess
    url: str  # http://127.0.0.1:PORT of the status API
    token_file: Path

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def auth(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token()}


@asynccontextmanager
async def status_agent(
    server: Server,
    backend: FixtureBackend,
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    name: str = "alpha",
) -> AsyncIterator[StatusAgent]:
    """An agent with its status API on a free port; its token file under ``tmp_path``."""
    environment = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), **(env or {})}
    config_file = environment.get("CONFIG_FILE")
    token_file = (
        Path(config_file).parent / "worker.token"
        if config_file
        else tmp_path / "xdg" / "nfrx" / "worker.token"
    )
    args = ["--status-addr", f"127.0.0.1:{free_port()}"]
    async with run_agent(server, backend.base_url, name=name, env=environment, args=args) as p:
        match = await p.wait_for_line(r"status API on (http://127\.0\.0\.1:\d+)")
        yield StatusAgent(p, match.group(1), token_file)


async def get_status(http: httpx.AsyncClient, agent: StatusAgent) -> dict[str, object]:
    response = await http.get(agent.url + "/status")
    assert response.status_code == 200
    document: dict[str, object] = response.json()
    return document


async def test_status_describes_the_agent_and_the_token_file_is_private(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with (
        status_agent(server, backend, tmp_path) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        status = await get_status(http, agent)
        reduced = {
            "state": "connected",
            "connected_to_server": True,
            "connected_to_backend": True,
            "models": ["fixture-model", "org/llama3:8b"],
            "current_jobs": 0,
            "max_concurrency": 1,
            "version": __version__,
            "client_id": status["client_id"],
            "client_name": "alpha",
            "instances": [],  # a server alone: no instances to name (see test_cluster)
        }
        assert status == reduced
        assert isinstance(status["client_id"], str)
        assert status["client_id"]
        # With the token: where it connects to, and what went wrong last.
        full = (await http.get(agent.url + "/status", headers=agent.auth())).json()
        assert full == {
            **reduced,
            "server_url": server.connect_url,
            "backend_url": backend.base_url.rstrip("/"),
            "last_error": "",
        }
        version = (await http.get(agent.url + "/version")).json()
        assert version["version"] == __version__
        assert set(version) == {"version", "build_sha", "build_date"}

        token = agent.token()
        assert re.fullmatch(r"[0-9a-f]{64}", token)
        assert stat.S_IMODE(os.stat(agent.token_file).st_mode) == 0o600
        assert str(agent.token_file) in agent.proc.output()
        assert token not in agent.proc.output()

    # A second start reuses the token.
    async with status_agent(server, backend, tmp_path, name="again") as again:
        assert again.token() == token


async def test_control_requires_the_token(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with (
        status_agent(server, backend, tmp_path) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        for action in ("drain", "undrain", "shutdown"):
            for headers in ({}, {"X-Auth-Token": "0" * 64}, {"X-Auth-Token": ""}):
                response = await http.post(f"{agent.url}/control/{action}", headers=headers)
                assert response.status_code == 401, (action, headers)
                assert response.json()["error"]["code"] == "unauthorized"
        wrong_method = await http.get(agent.url + "/control/drain", headers=agent.auth())
        assert wrong_method.status_code == 405
        assert (await get_status(http, agent))["state"] == "connected"
        assert agent.proc.process.returncode is None


async def test_drain_then_undrain_an_idle_agent(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    config_file = tmp_path / "conf" / "llm.yaml"
    config_file.parent.mkdir()
    config_file.write_text("max_concurrency: 2\n")
    async with (
        status_agent(server, backend, tmp_path, env={"CONFIG_FILE": str(config_file)}) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        assert agent.token_file == config_file.parent / "worker.token"
        assert stat.S_IMODE(os.stat(agent.token_file).st_mode) == 0o600
        mark = len(server.proc.lines)
        drained = await http.post(agent.url + "/control/drain", headers=agent.auth())
        assert drained.status_code == 200
        assert drained.json()["state"] == "draining"
        await server.proc.wait_for_line(r"llm agent alpha: draining", start=mark)
        status = await get_status(http, agent)
        assert status["state"] == "draining"
        assert status["connected_to_server"] is True

        # The server keeps the model but routes nothing to the agent: a request waits.
        body = {"model": "fixture-model", "stream": True, "messages": MESSAGES}
        async with http.stream(
            "POST", server.api_base + "/chat/completions", json=body, headers=server.headers()
        ) as stream:
            chunks = stream.aiter_bytes()
            first = await chunks.__anext__()
            assert first.startswith(b": nfrx.queue "), first
            assert not [r for r in backend.requests if r.path == "/v1/chat/completions"]

            mark = len(server.proc.lines)
            undrained = await http.post(agent.url + "/control/undrain", headers=agent.auth())
            assert undrained.status_code == 200
            assert undrained.json()["state"] == "connected"
            await server.proc.wait_for_line(r"llm agent alpha: ready", start=mark)
            rest = b"".join([c async for c in chunks])
        assert rest.endswith(b"data: [DONE]\n\n")
        assert sum(r.path == "/v1/chat/completions" for r in backend.requests) == 1

        again = await http.post(
            server.api_base + "/chat/completions",
            json={"model": "fixture-model", "messages": MESSAGES},
            headers=server.headers(),
        )
        assert again.status_code == 200
        # Drain and undrain did not end the agent.
        assert agent.proc.process.returncode is None
        assert (await get_status(http, agent))["state"] == "connected"


async def test_shutdown_finishes_in_flight_work_and_exits_zero(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with (
        status_agent(server, backend, tmp_path) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        body = {
            "model": "fixture-model",
            "stream": True,
            "messages": MESSAGES,
            "fixture": {"events": 10, "interval": 0.05},
        }
        async with http.stream(
            "POST", server.api_base + "/chat/completions", json=body, headers=server.headers()
        ) as stream:
            chunks = stream.aiter_bytes()
            received = await chunks.__anext__()
            response = await http.post(agent.url + "/control/shutdown", headers=agent.auth())
            assert response.status_code == 200
            assert response.json()["state"] == "draining"
            # An exiting agent cannot be undrained.
            refused = await http.post(agent.url + "/control/undrain", headers=agent.auth())
            assert refused.status_code == 409
            received += b"".join([c async for c in chunks])
        assert received.endswith(b"data: [DONE]\n\n")
        assert await agent.proc.wait_exit(HANG_GUARD) == 0
        await agent.proc.wait_for_line(r"/control/shutdown request: draining")


async def metrics(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await http.get(url)).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_metrics_count_jobs(server: Server, backend: FixtureBackend, tmp_path: Path) -> None:
    port = free_port()
    async with (
        run_agent(server, backend.base_url, env={"METRICS_PORT": str(port)}) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        match = await agent.wait_for_line(r"metrics on (http://127\.0\.0\.1:\d+)/metrics")
        url = match.group(1) + "/metrics"
        assert match.group(1) == f"http://127.0.0.1:{port}"
        before = await metrics(http, url)
        assert before["nfrx_worker_jobs_started_total"] == 0
        assert before["nfrx_worker_connected_to_server"] == 1
        assert before["nfrx_worker_connected_to_backend"] == 1
        assert before["nfrx_worker_max_concurrency"] == 1

        ok = await http.post(
            server.api_base + "/chat/completions",
            json={"model": "fixture-model", "messages": MESSAGES},
            headers=server.headers(),
        )
        assert ok.status_code == 200
        failed = await http.post(
            server.api_base + "/chat/completions",
            json={"model": "fixture-model", "messages": MESSAGES, "fixture": {"status": 500}},
            headers=server.headers(),
        )
        assert failed.status_code == 500
        # The client can have its answer a moment before the agent books the job: poll.
        with trio.fail_after(HANG_GUARD):
            while True:
                after = await metrics(http, url)
                if after["nfrx_worker_job_duration_seconds_count"] == 2:
                    break
                await trio.sleep(0.02)
        assert after["nfrx_worker_jobs_started_total"] == 2
        assert after["nfrx_worker_jobs_succeeded_total"] == 1
        assert after["nfrx_worker_jobs_failed_total"] == 1
        assert after["nfrx_worker_current_jobs"] == 0
        assert after["nfrx_worker_job_duration_seconds_sum"] > 0


async def test_an_unusable_status_addr_is_one_line(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    hint = " (write IPv6 addresses as [::1]:4555)"
    for addr, extra in (
        ("nonsense", ""),
        (":4555", ""),
        ("127.0.0.1:http", ""),
        ("::1:4555", hint),
    ):
        async with run_agent(
            server, backend.base_url, env=env, args=["--status-addr", addr], wait_connected=False
        ) as agent:
            assert await agent.wait_exit(HANG_GUARD) == 2, addr
            assert agent.lines == [
                f"nfrx llm: configuration error: STATUS_ADDR {addr!r}: expected host:port, "
                f"e.g. 127.0.0.1:4555{extra}"
            ], addr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with run_agent(
            server,
            backend.base_url,
            env=env,
            args=["--status-addr", f"127.0.0.1:{port}"],
            wait_connected=False,
        ) as agent:
            assert await agent.wait_exit(HANG_GUARD) == 1
            last = agent.lines[-1]
            assert last.startswith(f"nfrx llm: STATUS_ADDR: cannot listen on 127.0.0.1:{port}: ")
            assert "Traceback" not in agent.output()
            assert "connected to" not in agent.output()


async def test_sigterm_after_a_control_drain_is_a_graceful_exit(
    server: Server, backend: FixtureBackend, tmp_path: Path
) -> None:
    async with (
        status_agent(server, backend, tmp_path) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        drained = await http.post(agent.url + "/control/drain", headers=agent.auth())
        assert drained.status_code == 200
        # A control drain is not a first signal: this SIGTERM drains and exits, not "again".
        agent.proc.signal(signal.SIGTERM)
        assert await agent.proc.wait_exit(HANG_GUARD) == 0
        await agent.proc.wait_for_line(r"SIGTERM: draining; 0 request\(s\) in flight")
        assert "again" not in agent.proc.output()
