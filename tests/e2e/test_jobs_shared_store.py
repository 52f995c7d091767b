"""The jobs API's end-to-end tests again, on the shared job store: every test of
``test_jobs.py`` and ``test_jobs_deadlines.py`` with ``REDIS_URL`` set (one instance on the
session's redis-server), so the Redis store answers exactly as the in-process one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e import harness, test_jobs, test_jobs_deadlines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def shared(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every server these tests start shares the session's Redis."""

    def run_server(*, env: Mapping[str, str] | None = None, **options: Any) -> Any:
        shared_env = {**(env or {}), "REDIS_URL": redis_url, "INSTANCE_ID": "a"}
        return harness.run_server(env=shared_env, **options)

    monkeypatch.setattr(test_jobs, "run_server", run_server)
    monkeypatch.setattr(test_jobs_deadlines, "run_server", run_server)


@pytest.fixture
async def server(shared: None) -> AsyncIterator[harness.Server]:
    async with test_jobs.run_server(env={"JOBS_SSE_CLOSE_DELAY": "0"}) as s:
        yield s


http = test_jobs.http

for _module in (test_jobs, test_jobs_deadlines):
    for _name in dir(_module):
        if _name.startswith("test_"):
            globals()[_name] = getattr(_module, _name)
