"""The jobs API's end-to-end tests again, on the shared job store: every test of
``test_jobs.py`` and ``test_jobs_deadlines.py`` with ``REDIS_URL`` set (one instance on the
session's redis-server), so the Redis store answers exactly as the in-process one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e import test_jobs
from tests.e2e.harness import Server, run_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.e2e


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[Server]:
    env = {"JOBS_SSE_CLOSE_DELAY": "0", "REDIS_URL": redis_url, "INSTANCE_ID": "a"}
    async with run_server(env=env) as s:
        yield s


http = test_jobs.http

for _name in dir(test_jobs):
    if _name.startswith("test_"):
        globals()[_name] = getattr(test_jobs, _name)
