"""What the agent runtime says about its backend in its log: a backend that is starting is not a
failure (INFO, not WARNING), and an agent without models describes what it serves instead of
counting "0 model(s)". The runtime is driven directly, without a tunnel."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio

from nfrx.agent.proxy import Outcome
from nfrx.agent.runtime import AgentRuntime, BackendStarting, BackendState, BackendUnavailable
from nfrx.config.model import McpAgentConfig
from nfrx.transport.streams import IncomingStream


@attrs.define
class Backend:
    """A backend whose next probe answer the test sets."""

    kind: str = "mcp"
    poll_interval: float = 60.0
    failure: BackendUnavailable | None = None

    async def probe(self) -> BackendState:
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure
        return BackendState()

    async def handle(self, stream: IncomingStream) -> Outcome:
        await trio.lowlevel.checkpoint()
        return Outcome.ANSWERED


@attrs.define
class DescribedBackend(Backend):
    def describe(self, agent_id: str) -> str:
        return f"MCP relay at /api/mcp/id/{agent_id} (stdio provider)"


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "nfrx.agent"]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nfrx.agent")


async def test_a_starting_backend_is_info_and_its_readiness_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = DescribedBackend(failure=BackendStarting("starting the stdio provider /bin/p"))
    runtime = AgentRuntime(McpAgentConfig(client_id="notes"), backend)
    await runtime._probe_backend()
    await runtime._probe_backend()  # still starting: nothing new to say
    backend.failure = None
    await runtime._probe_backend()
    assert lines(caplog) == [
        ("INFO", "backend starting: starting the stdio provider /bin/p"),
        ("INFO", "backend ready: MCP relay at /api/mcp/id/notes (stdio provider)"),
    ]
    assert runtime.last_error == ""  # starting is no failure


async def test_a_failure_after_starting_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    backend = Backend(failure=BackendStarting("starting the stdio provider /bin/p"))
    runtime = AgentRuntime(McpAgentConfig(), backend)
    await runtime._probe_backend()
    backend.failure = BackendUnavailable("cannot start /bin/p: No such file or directory")
    await runtime._probe_backend()
    await runtime._probe_backend()
    assert lines(caplog) == [
        ("INFO", "backend starting: starting the stdio provider /bin/p"),
        (
            "WARNING",
            "backend not ready: cannot start /bin/p: No such file or directory "
            "(probing it every 2 s)",
        ),
        ("DEBUG", "backend still not ready: cannot start /bin/p: No such file or directory"),
    ]
    assert runtime.last_error == "backend not ready: cannot start /bin/p: No such file or directory"


def test_the_offer_is_the_backends_words_or_the_model_count() -> None:
    described = AgentRuntime(McpAgentConfig(client_id="notes"), DescribedBackend())
    assert described.offer(()) == "MCP relay at /api/mcp/id/notes (stdio provider)"
    counted = AgentRuntime(McpAgentConfig(), Backend())
    assert counted.offer(("a", "b")) == "2 model(s)"
