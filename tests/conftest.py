"""Shared fixtures (a fixture backend, a real server process, a real agent process) and one hook
that keeps skip reasons visible."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import pytest

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend


@pytest.fixture
async def backend() -> AsyncIterator[FixtureBackend]:
    async with run_backend(models=("fixture-model", "org/llama3:8b")) as b:
        yield b


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with run_server() as s:
        yield s


@pytest.fixture
async def agent(server: Server, backend: FixtureBackend) -> AsyncIterator[NfrxProcess]:
    async with run_agent(server, backend.base_url) as a:
        yield a


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Keep the reason of a skip (or xfail) raised in a Trio test or async fixture.

    pytest-trio runs the test and its async fixtures in one ``trio.run``, so such an outcome
    arrives wrapped in an exception group; it unwraps it with a bare ``pytest.skip()``, and
    ``-ra`` would then print "Skipped" at pytest-trio's own line. The original exception is the
    context of that bare one: raise it instead, with its message and location
    (``tests/test_skip_reasons.py`` checks that pytest-trio still needs this).
    """
    try:
        return (yield)
    except (pytest.skip.Exception, pytest.xfail.Exception) as outcome:
        raise _unwrapped(outcome) from None


def _unwrapped(outcome: BaseException) -> BaseException:
    group = outcome.__context__
    if not isinstance(group, BaseExceptionGroup):
        return outcome
    leaves: list[BaseException] = []
    queue: list[BaseException] = [group]
    while queue:
        exc = queue.pop()
        if isinstance(exc, BaseExceptionGroup):
            queue.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and type(leaves[0]) is type(outcome):
        return leaves[0]
    return outcome
