"""The jobs API's deadlines and bounds through a real ``nfrx serve`` (short settings): a silent
worker's lease expiring (requeue, or fail), the client TTL, retention, the cap on jobs, and two
waiting claimers both served when two jobs arrive.

Every wait is on something the server reports -- a claim returning, an event, a state snapshot --
never on a fixed sleep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.event_stream import EventStream
from tests.e2e.harness import run_server
from tests.e2e.jobs_client import as_client, assert_error, claim, create, get, post
from tests.e2e.test_state import Snapshots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from tests.e2e.harness import Server

pytestmark = pytest.mark.e2e


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=90) as client:
        yield client


async def wait_jobs(
    server: Server, http: httpx.AsyncClient, predicate: Callable[[dict[str, Any]], bool]
) -> None:
    """Until the jobs section of a state snapshot satisfies ``predicate``."""
    async with http.stream("GET", f"{server.url}/api/state/stream", headers=as_client(server)) as r:
        await Snapshots(r).until(lambda state: predicate(state["plugins"]["jobs"]))


async def test_a_silent_workers_job_goes_back_to_the_queue_for_another(
    http: httpx.AsyncClient,
) -> None:
    async with run_server(env={"JOBS_LEASE_SECONDS": "1"}) as server:
        job_id = await create(http, server)
        silent = await claim(http, server, worker_id="silent")
        assert silent is not None
        # The next worker's long poll is answered when the lease runs out and the job is back.
        other = await claim(http, server, worker_id="other", max_wait_seconds=60)
        assert other is not None
        assert (other["job_id"], other["claimed_worker_id"]) == (job_id, "other")
        body = {"state": "completed"}
        assert_error(
            await post(http, server, job_id, "status", silent, body), 403, "lease_mismatch"
        )
        done = await post(http, server, job_id, "status", other, body)
        assert done.json() == {"status": "completed"}
        metrics = (await http.get(f"{server.url}/metrics")).text
        assert "nfrx_jobs_lease_expired_total 1.0" in metrics


async def test_a_silent_workers_job_fails_when_requeueing_is_off(http: httpx.AsyncClient) -> None:
    env = {"JOBS_LEASE_SECONDS": "1", "JOBS_REQUEUE_EXPIRED": "false"}
    async with run_server(env=env) as server:
        job_id = await create(http, server)
        url = f"{server.url}/api/jobs/{job_id}/events"
        async with http.stream("GET", url, headers=as_client(server)) as response:
            follow = EventStream(response)
            assert await claim(http, server) is not None
            failed = await follow.until("status", status="failed")
        assert failed["error"]["code"] == "lease_expired"


async def test_a_job_nobody_follows_is_canceled_after_the_client_ttl(
    http: httpx.AsyncClient,
) -> None:
    # 3 s: time enough, even on a loaded machine, to subscribe between create and the TTL.
    async with run_server(env={"JOBS_CLIENT_TTL": "3"}) as server:
        followed = await create(http, server)
        url = f"{server.url}/api/jobs/{followed}/events"
        async with http.stream("GET", url, headers=as_client(server)) as response:
            follow = EventStream(response)
            await follow.next()  # subscribed: its TTL stops
            forgotten = await create(http, server)
            await wait_jobs(server, http, lambda jobs: jobs["summary"]["canceled_jobs"] == 1)
            assert (await get(http, server, followed))["status"] == "queued"
        canceled = await get(http, server, forgotten)
        assert canceled["status"] == "canceled"
        assert canceled["error"] == {"code": "client_inactive", "message": "client inactive"}


async def test_finished_jobs_are_forgotten_after_the_retention(http: httpx.AsyncClient) -> None:
    async with run_server(env={"JOBS_RETENTION": "1"}) as server:
        job_id = await create(http, server)
        cancel = await http.post(
            f"{server.url}/api/jobs/{job_id}/cancel", headers=as_client(server)
        )
        assert cancel.json() == {"status": "canceled"}
        await wait_jobs(server, http, lambda jobs: jobs["summary"]["total_jobs"] == 0)
        gone = await http.get(f"{server.url}/api/jobs/{job_id}", headers=as_client(server))
        assert_error(gone, 404, "not_found")


async def test_the_number_of_jobs_is_capped(http: httpx.AsyncClient) -> None:
    async with run_server(env={"JOBS_MAX": "2"}) as server:
        await create(http, server)
        await create(http, server)
        full = await http.post(
            f"{server.url}/api/jobs", json={"type": "t"}, headers=as_client(server)
        )
        assert_error(full, 503, "too_many_jobs")
        assert full.headers["retry-after"] == "5"


async def test_two_waiting_claimers_both_get_the_two_jobs_created_together(
    http: httpx.AsyncClient,
) -> None:
    """The original woke one waiter per notification (a one-slot channel): the second claim
    waited out its max_wait and answered 204 with a job in the queue."""
    async with run_server() as server:
        claims: dict[str, dict[str, Any] | None] = {}
        state_url = f"{server.url}/api/state/stream"
        async with (
            http.stream("GET", state_url, headers=as_client(server)) as state,
            trio.open_nursery() as nursery,
        ):
            snapshots = Snapshots(state)

            async def wait_for_work(worker: str) -> None:
                claims[worker] = await claim(http, server, worker_id=worker, max_wait_seconds=60)

            for worker in ("a", "b"):
                nursery.start_soon(wait_for_work, worker)
                # Parked once the state lists it (a claimer waits right after being seen).
                await snapshots.until(
                    lambda s, w=worker: any(
                        x.get("worker_id") == w for x in s["plugins"]["jobs"]["workers"]
                    )
                )
            created = {await create(http, server), await create(http, server)}
        assert {c["job_id"] for c in claims.values() if c is not None} == created
