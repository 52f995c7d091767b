"""The agent's backend poller: when it probes, and what it tells the server.

The runtime is driven directly (no tunnel) with a stub backend and a virtual clock
(``autojump_clock``), so the probe schedule is checked exactly: every poll interval while the
backend is ready, every 2 s at most while it is not, and at once when a request asks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import attrs
import pytest
import trio

from nfrx.agent.proxy import Outcome
from nfrx.agent.runtime import AgentRuntime, BackendState, BackendUnavailable
from nfrx.config.model import LlmAgentConfig
from nfrx.protocol import Open, Status
from nfrx.transport.streams import IncomingStream


@attrs.define
class StubBackend:
    """A backend whose health and models the test sets; it records when it was probed."""

    kind: str = "llm"
    poll_interval: float = 60.0
    models: tuple[str, ...] = ("m1", "m2")
    up: bool = True
    probe_seconds: float = 0.0
    outcome: Outcome = Outcome.ANSWERED
    probes: list[float] = attrs.field(factory=list)

    async def probe(self) -> BackendState:
        self.probes.append(trio.current_time())
        await trio.sleep(self.probe_seconds)
        if not self.up:
            raise BackendUnavailable("GET http://backend/v1/models: ConnectError")
        return BackendState(models=self.models, embedding_batch_size=16)

    async def handle(self, stream: IncomingStream) -> Outcome:
        await trio.lowlevel.checkpoint()
        return self.outcome


@attrs.define
class Polling:
    runtime: AgentRuntime
    backend: StubBackend
    published: list[Status]
    start: float

    def probes(self) -> list[float]:
        """Probe times, relative to the start of polling."""
        return [round(t - self.start, 6) for t in self.backend.probes]


@pytest.fixture
def backend() -> StubBackend:
    return StubBackend()


@pytest.fixture
async def polling(backend: StubBackend) -> AsyncIterator[Polling]:
    """The runtime after its first (successful) probe, with its poller running.

    Tests using it request ``autojump_clock`` themselves: pytest-trio picks the clock from the
    test's own arguments only.
    """
    runtime = AgentRuntime(LlmAgentConfig(max_concurrency=3), backend)
    assert await runtime._probe_backend()
    backend.probes.clear()
    published: list[Status] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime._poll_backend, published.append)
        yield Polling(runtime, backend, published, trio.current_time())
        nursery.cancel_scope.cancel()


async def sleep_until(polling: Polling, t: float) -> None:
    await trio.sleep_until(polling.start + t)


READY = Status(models=("m1", "m2"), max_concurrency=3, status="ready", embedding_batch_size=16)
NOT_READY = Status(
    models=("m1", "m2"), max_concurrency=0, status="not_ready", embedding_batch_size=16
)


async def test_a_ready_backend_is_probed_every_poll_interval(
    polling: Polling, autojump_clock: Any
) -> None:
    await sleep_until(polling, 59.9)
    assert polling.probes() == []
    await sleep_until(polling, 130)
    assert polling.probes() == [60, 120]
    assert polling.published == []  # nothing changed, nothing sent


async def test_a_failed_probe_keeps_the_models_with_zero_capacity(
    polling: Polling, autojump_clock: Any
) -> None:
    assert polling.runtime._status() == READY
    polling.backend.up = False
    await sleep_until(polling, 60.5)
    assert polling.published == [NOT_READY]
    # Not ready: probed every 2 s, and nothing new to say while it stays down.
    await sleep_until(polling, 67)
    assert polling.probes() == [60, 62, 64, 66]
    assert polling.published == [NOT_READY]

    polling.backend.up = True
    await sleep_until(polling, 69)
    assert polling.published == [NOT_READY, READY]
    assert polling.probes() == [60, 62, 64, 66, 68]
    # Ready again: back to the poll interval.
    await sleep_until(polling, 127.9)
    assert polling.probes() == [60, 62, 64, 66, 68]
    await sleep_until(polling, 128.1)
    assert polling.probes() == [60, 62, 64, 66, 68, 128]


async def test_a_short_poll_interval_is_kept_while_not_ready(
    autojump_clock: Any, backend: StubBackend
) -> None:
    backend.poll_interval = 0.5
    backend.up = False
    runtime = AgentRuntime(LlmAgentConfig(), backend)
    assert not await runtime._probe_backend()  # never ready: nothing changed
    assert runtime._status() == Status(models=(), max_concurrency=0, status="not_ready")
    start = trio.current_time()
    with trio.move_on_after(2.2):
        await runtime._poll_backend(lambda status: None)
    assert [round(t - start, 6) for t in backend.probes[1:]] == [0.5, 1.0, 1.5, 2.0]


async def test_probe_soon_probes_at_once(polling: Polling, autojump_clock: Any) -> None:
    await sleep_until(polling, 10)
    polling.backend.up = False
    polling.runtime.probe_soon()
    await sleep_until(polling, 10.5)
    assert polling.probes() == [10]
    assert polling.published == [NOT_READY]
    # The interval restarts from that probe.
    await sleep_until(polling, 13)
    assert polling.probes() == [10, 12]


async def test_probe_soon_during_a_probe_gets_a_probe_of_its_own(
    polling: Polling, autojump_clock: Any
) -> None:
    polling.backend.probe_seconds = 1
    polling.runtime.probe_soon()
    await sleep_until(polling, 0.5)
    assert polling.probes() == [0]
    polling.runtime.probe_soon()
    polling.runtime.probe_soon()  # coalesced with the one before
    await sleep_until(polling, 10)
    assert polling.probes() == [0, 1]


async def test_model_changes_are_published_an_empty_list_too(
    polling: Polling, autojump_clock: Any
) -> None:
    polling.backend.models = ("m2", "m3")
    await sleep_until(polling, 61)
    polling.backend.models = ()
    await sleep_until(polling, 121)
    assert [(s.status, s.models, s.max_concurrency) for s in polling.published] == [
        ("ready", ("m2", "m3"), 3),
        ("ready", (), 3),
    ]


def stream_for(path: str) -> IncomingStream:
    request = Open(stream_id=1, method="POST", path=path)
    return cast("IncomingStream", SimpleNamespace(request=request))


@pytest.mark.parametrize(
    ("outcome", "probed"),
    [
        (Outcome.ANSWERED, False),
        (Outcome.SERVER_ERROR, True),
        (Outcome.UNREACHABLE, True),
        (Outcome.BROKEN, True),
    ],
)
async def test_a_suspect_request_outcome_triggers_a_probe(
    polling: Polling, autojump_clock: Any, outcome: Outcome, probed: bool
) -> None:
    await sleep_until(polling, 5)
    polling.backend.outcome = outcome
    await polling.runtime._handle(stream_for("/v1/chat/completions"))
    await sleep_until(polling, 6)
    assert polling.probes() == ([5] if probed else [])


async def test_draining_keeps_the_models_with_zero_capacity(
    polling: Polling, autojump_clock: Any
) -> None:
    polling.runtime.draining = True
    assert polling.runtime._status() == Status(
        models=("m1", "m2"), max_concurrency=0, status="draining", embedding_batch_size=16
    )
