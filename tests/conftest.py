"""Shared fixtures: a fixture backend, a real server process, a real agent process."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
