"""The jobs and transfer APIs across instances sharing one real Redis: a client of one instance
and a worker of another work on the same jobs, see each other's updates and cancellations, and
move a transfer's bytes between them.

Every server runs with ``JOBS_SSE_CLOSE_DELAY=0`` (a job's stream ends right after its final
event: observed, never waited out).
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.cluster import instance_env, run_instances, wait_state
from tests.e2e.event_stream import EventStream
from tests.e2e.harness import run_server
from tests.e2e.jobs_client import as_client, as_worker, assert_error, claim, create, get, post
from tests.e2e.test_transfer import DyingBody, rss, sides_waiting
from tests.e2e.test_transfer import wait_state as transfer_wait

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.redis_server import RedisServer

pytestmark = pytest.mark.e2e

CAP = 90.0
MiB = 1024 * 1024
ENV = {"JOBS_SSE_CLOSE_DELAY": "0"}


def claimer_seen(snapshot: dict[str, Any]) -> bool:
    return bool(snapshot["plugins"]["jobs"]["summary"]["recent_workers"])


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def test_a_client_of_one_instance_follows_a_worker_of_another(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            job_id = await create(http, a, metadata={"file": "a.wav"})
            assert (await get(http, b, job_id))["queue_position"] == 1
            async with http.stream(
                "GET", f"{a.url}/api/jobs/{job_id}/events", headers=as_client(a)
            ) as response:
                follow = EventStream(response)
                assert (await follow.next())[1]["status"] == "queued"
                claimed = await claim(http, b, worker_id="w-b", max_wait_seconds=5)
                assert claimed is not None
                assert claimed["job_id"] == job_id
                assert (await follow.until("status", status="claimed"))["claimed_worker_id"] == (
                    "w-b"
                )
                progress = {"state": "running", "progress": {"percent": 50}}
                assert (await post(http, b, job_id, "status", claimed, progress)).json() == {
                    "status": "running"
                }
                running = await follow.until("status", status="running")
                assert running["progress"] == {"percent": 50}
                # the lease is the claimer's, whichever instance a stranger asks
                stranger = dict(claimed, lease_token="not-it")
                assert_error(
                    await post(http, a, job_id, "heartbeat", stranger), 403, "lease_mismatch"
                )
                await post(http, a, job_id, "status", claimed, {"state": "completed"})
                await follow.until("status", status="completed")
                assert await follow.rest() == []
            assert (await get(http, b, job_id))["status"] == "completed"


async def test_a_claimer_waiting_on_each_instance_gets_a_job_created_on_the_other(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            got: list[str] = []

            async def wait_for_work(server: Any) -> None:
                claimed = await claim(http, server, max_wait_seconds=60)
                assert claimed is not None
                got.append(claimed["job_id"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_work, a)
                nursery.start_soon(wait_for_work, b)
                for server in (a, b):  # each instance has its claimer (parked, or about to)
                    await wait_state(server, claimer_seen)
                created = {await create(http, b), await create(http, a)}
            assert sorted(got) == sorted(created)


async def test_a_cancel_on_either_instance_reaches_the_other_side(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            # the client cancels on a: the worker's claim stream on b hears it
            job_id = await create(http, a)
            async with http.stream(
                "GET", f"{b.url}/api/jobs/stream?max_active=1", headers=as_worker(b)
            ) as stream:
                work = EventStream(stream)
                name, claimed = await work.next()
                assert (name, claimed["job_id"]) == ("job", job_id)
                canceled = await http.post(
                    f"{a.url}/api/jobs/{job_id}/cancel", headers=as_client(a)
                )
                assert canceled.json() == {"status": "canceled"}
                name, revoked = await work.next()
                assert (name, revoked) == ("cancel", {"job_id": job_id, "status": "canceled"})
            assert_error(
                await post(http, b, job_id, "status", claimed, {"state": "running"}),
                409,
                "invalid_state",
            )
            # the worker on b cancels: the client's stream on a ends with it
            job_id = await create(http, a)
            claimed = await claim(http, b)
            assert claimed is not None
            async with http.stream(
                "GET", f"{a.url}/api/jobs/{job_id}/events", headers=as_client(a)
            ) as response:
                follow = EventStream(response)
                assert (await follow.next())[1]["status"] == "claimed"
                await post(http, b, job_id, "status", claimed, {"state": "canceled"})
                await follow.until("status", status="canceled")
                assert await follow.rest() == []


async def test_a_lease_lost_on_one_instance_puts_the_job_back_for_the_other(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    env = {**ENV, "JOBS_LEASE_SECONDS": "1"}
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=env) as (a, b):
            job_id = await create(http, a)
            first = await claim(http, b, worker_id="silent")
            assert first is not None
            again = await claim(http, a, worker_id="next", max_wait_seconds=30)
            assert again is not None
            assert again["job_id"] == job_id
            assert_error(await post(http, b, job_id, "heartbeat", first), 403, "lease_mismatch")


async def test_a_payload_crosses_instances_intact(redis_url: str, http: httpx.AsyncClient) -> None:
    """The worker offers a payload channel on b; the client writes it through a, the worker
    reads it on b, and the other way round for the result: bytes go instance to instance."""
    payload = os.urandom(8 * MiB)
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            job_id = await create(http, a)
            claimed = await claim(http, b)
            assert claimed is not None
            offered = (await post(http, b, job_id, "payload", claimed)).json()
            received: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    response = await http.get(b.url + offered["reader_url"], headers=as_worker(b))
                    assert response.status_code == 200
                    received.append(response.content)

                nursery.start_soon(read)
                written = await http.post(
                    a.url + offered["reader_url"], content=payload, headers=as_client(a)
                )
                assert written.status_code == 200, written.text
                assert written.json() == {"status": "ok", "bytes": len(payload)}
            assert hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()

            result = (await post(http, b, job_id, "result", claimed)).json()
            chunks: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    answer = await http.post(
                        b.url + result["writer_url"], content=b"transcript", headers=as_worker(b)
                    )
                    assert answer.status_code == 200, answer.text

                nursery.start_soon(write)
                async with http.stream(
                    "GET", a.url + result["writer_url"], headers=as_client(a)
                ) as response:
                    assert response.status_code == 200
                    chunks.extend([chunk async for chunk in response.aiter_bytes()])
            assert b"".join(chunks) == b"transcript"


async def test_a_direct_channel_relays_a_stream_between_instances_and_answers_their_errors(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    data = os.urandom(4 * MiB)
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            opened = await http.post(f"{a.url}/api/transfer", headers=as_client(a))
            channel = opened.json()["channel_id"]
            digest = hashlib.sha256()
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    answer = await http.post(
                        f"{b.url}/api/transfer/{channel}", content=data, headers=as_worker(b)
                    )
                    assert answer.json() == {"status": "ok", "bytes": len(data)}

                nursery.start_soon(write)
                async with http.stream(
                    "GET", f"{b.url}/api/transfer/{channel}", headers=as_client(b)
                ) as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_bytes():
                        digest.update(chunk)
            assert digest.digest() == hashlib.sha256(data).digest()
            # done: its id is unknown everywhere, with the home's answer
            assert_error(
                await http.get(f"{b.url}/api/transfer/{channel}", headers=as_client(b)),
                404,
                "transfer_not_found",
            )
            # the home checks the relayed caller's key too
            other = (await http.post(f"{a.url}/api/transfer", headers=as_client(a))).json()
            assert_error(
                await http.get(
                    f"{b.url}/api/transfer/{other['channel_id']}",
                    headers={"Authorization": "Bearer wrong"},
                ),
                401,
                "unauthorized",
            )


async def test_a_relayed_writer_dying_cuts_a_relayed_reader(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            channel = (await http.post(f"{a.url}/api/transfer", headers=as_client(a))).json()
            url = f"{b.url}/api/transfer/{channel['channel_id']}"  # both sides on b, home a
            received = 0
            cut: list[httpx.RemoteProtocolError] = []

            async def read() -> None:
                nonlocal received
                try:
                    async with http.stream("GET", url, headers=as_client(b)) as response:
                        assert response.status_code == 200
                        async for chunk in response.aiter_raw():
                            received += len(chunk)
                except httpx.RemoteProtocolError as exc:  # not a clean end of the body
                    cut.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await transfer_wait(a, http, sides_waiting(1))  # the reader is at the home
                with pytest.raises(RuntimeError, match="the writer died"):
                    await http.post(url, content=DyingBody(4 * MiB), headers=as_worker(b))
            assert len(cut) == 1
            assert 0 < received <= 4 * MiB + 64 * 1024


async def test_a_relayed_transfer_holds_bounded_memory_on_both_instances(
    redis_url: str, http: httpx.AsyncClient
) -> None:
    total = 256 * MiB
    block = os.urandom(MiB)
    sent, got = hashlib.sha256(), hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        for i in range(total // MiB):
            chunk = i.to_bytes(4, "big") + block[4:]
            sent.update(chunk)
            yield chunk

    with trio.fail_after(4 * CAP):
        async with run_instances(redis_url, 2, env=ENV) as (a, b):
            channel = (await http.post(f"{a.url}/api/transfer", headers=as_client(a))).json()
            path = f"/api/transfer/{channel['channel_id']}"
            before = [rss(server.proc.process.pid) for server in (a, b)]
            written: list[httpx.Response] = []
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    response = await http.post(
                        b.url + path, content=generate(), headers=as_worker(b)
                    )
                    written.append(response)

                nursery.start_soon(write)
                async with http.stream("GET", b.url + path, headers=as_client(b)) as response:
                    async for chunk in response.aiter_raw():
                        got.update(chunk)
            after = [rss(server.proc.process.pid) for server in (a, b)]
            assert written[0].json() == {"status": "ok", "bytes": total}
            assert got.hexdigest() == sent.hexdigest()
            for start, end in zip(before, after, strict=True):
                assert end - start < 20 * MiB, (before, after)


async def test_without_redis_the_jobs_api_says_so(
    redis_url: str, redis_server: RedisServer, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(CAP):
        async with run_server(env=instance_env(redis_url, "a", ENV)) as a:
            job_id = await create(http, a)
            redis_server.stop()
            body = assert_error(
                await http.post(f"{a.url}/api/jobs", json={"type": "t"}, headers=as_client(a)),
                503,
                "jobs_unavailable",
            )
            assert "REDIS_URL" in body["message"]
            assert_error(
                await http.get(f"{a.url}/api/jobs/{job_id}", headers=as_client(a)),
                503,
                "jobs_unavailable",
            )
            assert_error(
                await http.post(f"{a.url}/api/jobs/claim", json={}, headers=as_worker(a)),
                503,
                "jobs_unavailable",
            )
            assert_error(
                await http.get(f"{a.url}/api/transfer/unknown", headers=as_client(a)),
                503,
                "transfer_unavailable",
            )
