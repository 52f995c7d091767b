"""Private addresses and credentials stay private (issue 13, finding 4).

The agent's backend URL carries a password (``http://user:s3cret@127.0.0.1:PORT/v1``). Clients
must never see any of it -- not in a 502 body, not in a final SSE error event -- only the error
code and their request id; operators see the detail in the logs with the userinfo and query
values redacted; the agent's ``GET /status`` shows URLs and the last error only with the token,
redacted even then, and answers only requests addressed to a loopback host (DNS rebinding);
``--print-config`` redacts URLs too.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.harness import Server, clean_env, run_agent
from tests.fixtures.backend import run_backend

pytestmark = pytest.mark.e2e

SECRET = "s3cret"
HANG_GUARD = 60.0


def with_password(base_url: str) -> str:
    """``base_url`` (http://127.0.0.1:PORT/v1) with ``user:s3cret@`` in it."""
    return base_url.replace("http://", f"http://user:{SECRET}@", 1)


def redacted(base_url: str) -> str:
    return base_url.replace("http://", "http://***@", 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request_id_of(message: str) -> str:
    match = re.fullmatch(r".* \(request id ([^)]+)\)", message)
    assert match, message
    return match.group(1)


async def test_a_failed_backend_is_named_only_in_the_logs(server: Server, tmp_path: Path) -> None:
    status_port = free_port()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    args = ["--status-addr", f"127.0.0.1:{status_port}"]
    status_url = f"http://127.0.0.1:{status_port}/status"
    async with (
        run_backend(gate=True) as backend,
        run_agent(server, with_password(backend.base_url), env=env, args=args) as agent,
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        await backend.refuse_connections()  # the backend is gone; the agent does not know yet
        response = await http.post(
            f"{server.api_base}/chat/completions",
            headers=server.headers(),
            json={"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "upstream_unreachable"
        request_id = request_id_of(error["message"])
        assert error["message"] == (
            f"the agent could not reach its backend (request id {request_id})"
        )
        assert backend.base_url.split("//")[1] not in response.text
        # The operator finds the detail under that request id, redacted ...
        line = await server.proc.wait_for_line(rf"failed before answering: .*{request_id}")
        assert f"cannot reach the backend at {redacted(backend.base_url)}: " in line.string
        # ... and in the agent's own log.
        await agent.wait_for_line(
            rf"backend not ready: GET {re.escape(redacted(backend.base_url))}/models: "
        )

        # /status: the reduced view without the token, the redacted whole with it.
        reduced = (await http.get(status_url)).json()
        assert set(reduced).isdisjoint({"server_url", "backend_url", "last_error"})
        assert reduced["connected_to_backend"] is False
        token = (tmp_path / "xdg" / "nfrx" / "worker.token").read_text().strip()
        full = (await http.get(status_url, headers={"X-Auth-Token": token})).json()
        assert full["backend_url"] == redacted(backend.base_url)
        assert full["server_url"] == server.connect_url
        assert full["last_error"].startswith(
            f"backend not ready: GET {redacted(backend.base_url)}/models: "
        )
        wrong = await http.get(status_url, headers={"X-Auth-Token": "0" * 64})
        assert set(wrong.json()) == set(reduced)
    assert SECRET not in server.proc.output()
    assert SECRET not in agent.output()


async def test_a_stream_that_breaks_ends_with_an_error_event_naming_nothing(
    server: Server,
) -> None:
    async with run_backend(gate=True) as backend:
        async with (
            run_agent(server, with_password(backend.base_url)) as agent,
            httpx.AsyncClient(timeout=HANG_GUARD) as http,
            http.stream(
                "POST",
                f"{server.api_base}/chat/completions",
                headers=server.headers(),
                json={
                    "model": "fixture-model",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                    "fixture": {"hold": "h", "events": 2},
                },
            ) as response,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            while not (await anext(lines)).startswith("data: "):
                pass
            await backend.refuse_connections()  # the backend crashes mid-stream
            rest = [line async for line in lines if line]
        assert rest[-2] == "event: error"
        error = json.loads(rest[-1].removeprefix("data: "))["error"]
        assert error["code"] == "upstream_error"
        request_id = request_id_of(error["message"])
        assert error["message"] == f"the agent's backend failed (request id {request_id})"
        line = await server.proc.wait_for_line(rf"the answer broke off: .*{request_id}")
        assert redacted(backend.base_url) in line.string
    assert SECRET not in server.proc.output()
    assert SECRET not in agent.output()


async def test_the_status_api_answers_only_its_own_host_names(
    server: Server, tmp_path: Path
) -> None:
    status_port = free_port()
    async with (
        run_backend() as backend,
        run_agent(
            server,
            backend.base_url,
            env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")},
            args=["--status-addr", f"127.0.0.1:{status_port}"],
        ),
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
    ):
        url = f"http://127.0.0.1:{status_port}"
        token = (tmp_path / "xdg" / "nfrx" / "worker.token").read_text().strip()
        for host in (
            "127.0.0.1",
            f"127.0.0.1:{status_port}",
            f"localhost:{status_port}",
            "LOCALHOST",
            "[::1]:4555",
            "app.localhost",
            "127.0.0.2",
        ):
            response = await http.get(url + "/status", headers={"Host": host})
            assert response.status_code == 200, host
        # A page whose DNS name was rebound to 127.0.0.1 sends its own name.
        for host in (
            "evil.example",
            f"evil.example:{status_port}",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "",
        ):
            for method, path in (
                ("GET", "/status"),
                ("GET", "/version"),
                ("POST", "/control/drain"),
            ):
                response = await http.request(
                    method, url + path, headers={"Host": host, "X-Auth-Token": token}
                )
                assert response.status_code == 421, (host, path)
                error = response.json()["error"]
                assert error["code"] == "misdirected_request"
        assert (await http.get(url + "/status")).json()["state"] == "connected"


async def test_print_config_redacts_urls() -> None:
    env = clean_env(
        {
            "COMPLETION_BASE_URL": f"http://user:{SECRET}@10.0.0.5:8000/v1?key=k1",
            "SERVER_URL": f"wss://agent:{SECRET}@gw.example/api/llm/connect",
            "CLIENT_KEY": "ck-not-shown",
        }
    )
    with trio.fail_after(HANG_GUARD):
        result = await trio.run_process(
            [sys.executable, "-m", "nfrx", "llm", "--print-config"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "completion_base_url: http://***@10.0.0.5:8000/v1?key=***" in text
    assert "server_url: wss://***@gw.example/api/llm/connect" in text
    assert "client_key: '***'" in text
    for secret in (SECRET, "k1", "ck-not-shown"):
        assert secret not in text
