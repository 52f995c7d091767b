"""Shared fixtures (a fixture backend, a real server process, a real agent process, a real
redis-server) and one hook that keeps skip reasons visible."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator

import pytest

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend
from tests.fixtures.redis_server import REDIS_SERVER, RedisServer


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (a Unix socket in a temporary directory), stopped
    by its pid at the end; the tests that need it skip, saying why, without it."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running (a test may have stopped it), emptied and its command counts
    reset for this test."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.command("FLUSHALL")
    redis_server.command("CONFIG", "RESETSTAT")
    return redis_server.url


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
