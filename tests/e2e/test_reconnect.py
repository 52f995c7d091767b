"""The agent's connect loop: give up at once without --reconnect, keep trying with it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager

import httpx
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, clean_env, nfrx, run_agent, run_server
from tests.fixtures.backend import FixtureBackend

pytestmark = pytest.mark.e2e

MODELS = ["fixture-model", "org/llama3:8b"]
CHAT = {"model": "fixture-model", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def run_server_at(
    port: int,
    *,
    api_key: str = "ak",
    client_key: str = "ck",
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Server]:
    """Like the harness's ``run_server``, on a given port instead of a free one."""
    environment = {"API_KEY": api_key, "CLIENT_KEY": client_key, **(env or {})}
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    async with nfrx("server", args, environment) as proc:
        match = await proc.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)")
        server = Server(proc, match.group(1), api_key, client_key)
        assert server_port(server) == port
        yield server


@contextmanager
def refusing_port() -> Iterator[socket.socket]:
    """A socket bound to a local port, not listening: connections to it are refused, and no
    other process can take the port until the socket is closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        yield placeholder


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port where nothing listens, for the duration of the block."""
    with refusing_port() as placeholder:
        yield placeholder.getsockname()[1]


def server_port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/api/llm/connect"


def connected_lines(proc: NfrxProcess) -> list[int]:
    return [i for i, line in enumerate(proc.lines) if "connected to " in line]


async def chat_ok(server: Server) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.api_base}/chat/completions", headers=server.headers(), json=CHAT
        )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from fixture"


async def owners(server: Server) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.api_base}/models", headers=server.headers())
    assert response.status_code == 200, response.text
    return {m["id"]: m["owned_by"] for m in response.json()["data"]}


# -- without --reconnect ------------------------------------------------------------------------


async def test_unreachable_server_without_reconnect_exits(backend: FixtureBackend) -> None:
    with closed_port() as port:
        env = {
            "SERVER_URL": ws_url(port),
            "CLIENT_KEY": "ck",
            "COMPLETION_BASE_URL": backend.base_url,
            "CLIENT_NAME": "lonely",
        }
        async with nfrx("agent lonely", ["llm"], env) as agent:
            code = await agent.wait_exit(timeout=10)
            await agent.wait_for_line(rf"cannot connect to {ws_url(port)}")
    assert code == 1
    output = agent.output()
    assert "Traceback" not in output, output
    assert agent.lines[-1].startswith(f"nfrx llm: cannot connect to {ws_url(port)}: ")
    assert agent.lines[-1].endswith("(use --reconnect to keep retrying)")
    assert "reconnecting in" not in output
    assert "connected to" not in output


async def test_unreachable_server_reason_is_one_line_on_stderr(backend: FixtureBackend) -> None:
    with closed_port() as port:
        env = clean_env(
            {
                "SERVER_URL": ws_url(port),
                "CLIENT_KEY": "ck",
                "COMPLETION_BASE_URL": backend.base_url,
                "LOG_LEVEL": "error",  # only what the operator must see
            }
        )
        with trio.fail_after(20):
            result = await trio.run_process(
                [sys.executable, "-m", "nfrx", "llm"],
                env=env,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert result.stdout == b""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith("nfrx llm: cannot connect to ")
    assert ws_url(port) in line
    assert line.endswith("(use --reconnect to keep retrying)")


async def test_server_killed_without_reconnect_agent_exits(
    server: Server, backend: FixtureBackend
) -> None:
    async with run_agent(server, backend.base_url, name="solo") as agent:
        server.proc.signal(signal.SIGKILL)
        assert await agent.wait_exit(timeout=10) != 0
        await agent.wait_for_line(rf"tunnel to {server.connect_url} closed")
        assert "reconnecting in" not in agent.output()


# -- with --reconnect ---------------------------------------------------------------------------


async def test_agent_reconnects_to_a_restarted_server(backend: FixtureBackend) -> None:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(run_server())
        port = server_port(first)
        agent = await stack.enter_async_context(
            run_agent(first, backend.base_url, name="phoenix", args=["-r"])
        )
        assert await owners(first) == dict.fromkeys(MODELS, "phoenix")
        before = len(agent.lines)

        first.proc.signal(signal.SIGKILL)
        assert await first.proc.wait_exit() == -signal.SIGKILL
        await agent.wait_for_line(
            rf"tunnel to {first.connect_url} closed: .*; reconnecting in 1 s", start=before
        )

        second = await stack.enter_async_context(run_server_at(port))
        await agent.wait_for_line(rf"connected to {second.connect_url} as phoenix", start=before)
        assert len(connected_lines(agent)) == 2
        assert agent.process.returncode is None
        assert await owners(second) == dict.fromkeys(MODELS, "phoenix")
        await chat_ok(second)


async def test_agent_waits_for_a_server_that_is_not_up_yet(backend: FixtureBackend) -> None:
    with refusing_port() as placeholder:
        port = placeholder.getsockname()[1]
        env = {
            "SERVER_URL": ws_url(port),
            "CLIENT_KEY": "ck",
            "COMPLETION_BASE_URL": backend.base_url,
            "CLIENT_NAME": "early",
        }
        async with nfrx("agent early", ["llm", "-r"], env) as agent:
            # It failed, said when it will retry, and is still running.
            await agent.wait_for_line(rf"cannot connect to {ws_url(port)}: .*; reconnecting in 1 s")
            # Still trying: a second failed attempt, with the schedule's next delay.
            first_retry = len(agent.lines)
            await agent.wait_for_line(r"reconnecting in 1 s", start=first_retry)
            assert agent.process.returncode is None
            assert connected_lines(agent) == []

            placeholder.close()
            async with run_server_at(port) as server:
                await agent.wait_for_line(rf"connected to {ws_url(port)} as early")
                assert agent.process.returncode is None
                assert await owners(server) == dict.fromkeys(MODELS, "early")
                await chat_ok(server)


async def test_fatal_refusal_is_not_retried(server: Server, backend: FixtureBackend) -> None:
    # A wrong client key cannot get better by retrying: the agent exits even with -r.
    async with run_agent(
        server,
        backend.base_url,
        name="wrong",
        env={"CLIENT_KEY": "not-the-key"},
        args=["-r"],
        wait_connected=False,
    ) as agent:
        assert await agent.wait_exit(timeout=10) != 0
        await agent.wait_for_line(r"the server refused this agent: .*\(http_401\)")
    assert "reconnecting in" not in agent.output()
    assert await owners(server) == {}


async def test_duplicate_id_is_retried_until_free(server: Server, backend: FixtureBackend) -> None:
    same = {"CLIENT_ID": "shared-id"}
    async with (
        run_agent(server, backend.base_url, name="holder", env=same) as holder,
        run_agent(
            server, backend.base_url, name="patient", env=same, args=["-r"], wait_connected=False
        ) as patient,
    ):
        await patient.wait_for_line(r"\(id_in_use\); reconnecting in 1 s")
        assert patient.process.returncode is None
        assert await owners(server) == dict.fromkeys(MODELS, "holder")

        holder.signal(signal.SIGKILL)
        await patient.wait_for_line(r"connected to \S+ as patient \(shared-id\)")
        assert await owners(server) == dict.fromkeys(MODELS, "patient")
        await chat_ok(server)


async def test_backoff_restarts_after_a_good_session(backend: FixtureBackend) -> None:
    # Each time a tunnel that was up drops, the first retry comes after 1 s again.
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(run_server())
        port = server_port(server)
        agent = await stack.enter_async_context(
            run_agent(server, backend.base_url, name="bouncer", args=["-r"])
        )
        for _ in range(2):
            before = len(agent.lines)
            server.proc.signal(signal.SIGKILL)
            await server.proc.wait_exit()
            await agent.wait_for_line(r"closed: .*; reconnecting in 1 s", start=before)
            server = await stack.enter_async_context(run_server_at(port))
            await agent.wait_for_line(r"connected to ", start=before)
        await chat_ok(server)
        assert len(connected_lines(agent)) == 3
