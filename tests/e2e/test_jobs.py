"""The jobs API through a real ``nfrx serve`` with httpx clients and workers: a full job and its
event sequence, every route's error answers, affinity and priority, the claim stream, and
cancellation from either side reaching the other promptly.

The server runs with ``JOBS_SSE_CLOSE_DELAY=0``, so a job's event stream ends right after its final
event: "the stream ended" is observed, never waited out.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio

from tests.e2e.event_stream import EventStream
from tests.e2e.harness import Server, run_server
from tests.e2e.jobs_client import (
    as_client,
    as_worker,
    assert_error,
    claim,
    create,
    get,
    post,
)
from tests.e2e.test_transfer import sides_waiting, wait_state

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.e2e

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with run_server(env={"JOBS_SSE_CLOSE_DELAY": "0"}) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def test_a_job_from_creation_to_result_with_its_event_sequence(
    server: Server, http: httpx.AsyncClient
) -> None:
    job_id = await create(http, server, metadata={"filename": "a.wav"}, worker_group="gpu")
    url = server.url
    audio, text = b"RIFF fake audio" * 1000, b"hello world"
    async with http.stream(
        "GET", f"{url}/api/jobs/{job_id}/events", headers=as_client(server)
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = EventStream(r)
        seen: list[tuple[str, str | None]] = []

        async def next_event() -> dict[str, Any]:
            name, data = await events.next()
            seen.append((name, data.get("status")))
            return data

        first = await next_event()
        assert (first["status"], first["queue_position"]) == ("queued", 1)
        claimed = await claim(
            http, server, worker_id="w1", worker_group="gpu", types=["asr.transcribe"]
        )
        assert claimed is not None
        assert {k: v for k, v in claimed.items() if not k.startswith("lease")} == {
            "job_id": job_id,
            "type": "asr.transcribe",
            "metadata": {"filename": "a.wav"},
            "worker_id": "",
            "worker_group": "gpu",
            "claimed_worker_id": "w1",
            "claimed_worker_group": "gpu",
        }
        assert RFC3339.match(claimed["lease_expires_at"])
        await next_event()  # claimed
        offered = await post(http, server, job_id, "payload", claimed, {"properties": {"p": 1}})
        assert offered.status_code == 200, offered.text
        payload = offered.json()
        assert payload["key"] == "payload"
        assert payload["reader_url"] == f"/api/transfer/{payload['channel_id']}"
        assert payload["properties"] == {"p": 1}
        to_write = await next_event()
        assert to_write["method"] == "POST"
        await next_event()  # awaiting_payload
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    http.post, url + to_write["url"], content=audio, headers=as_client(server)
                )
            )
            received = await http.get(url + payload["reader_url"], headers=as_worker(server))
        assert received.content == audio
        running = await post(
            http,
            server,
            job_id,
            "status",
            claimed,
            {"state": "running", "progress": {"percent": 50}},
        )
        assert running.json() == {"status": "running"}
        assert (await next_event())["progress"] == {"percent": 50}
        result = (await post(http, server, job_id, "result", claimed)).json()
        to_read = await next_event()
        assert (to_read["method"], to_read["url"]) == ("GET", result["writer_url"])
        await next_event()  # awaiting_result
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    http.post, url + result["writer_url"], content=text, headers=as_worker(server)
                )
            )
            transcript = await http.get(url + to_read["url"], headers=as_client(server))
        assert transcript.content == text
        done = await post(http, server, job_id, "status", claimed, {"state": "completed"})
        assert done.json() == {"status": "completed"}
        assert (await next_event())["status"] == "completed"
        assert await events.rest() == []  # and the stream ends (JOBS_SSE_CLOSE_DELAY=0)
    assert seen == [
        ("status", "queued"),
        ("status", "claimed"),
        ("payload", None),
        ("status", "awaiting_payload"),
        ("status", "running"),
        ("result", None),
        ("status", "awaiting_result"),
        ("status", "completed"),
    ]
    job = await get(http, server, job_id)
    assert job["status"] == "completed"
    assert set(job["payloads"]) == {"payload"}
    assert set(job["results"]) == {"result"}
    assert "queue_position" not in job
    assert RFC3339.match(job["created_at"])
    state = (await http.get(f"{url}/api/state", headers=as_client(server))).json()
    summary = state["plugins"]["jobs"]["summary"]
    assert (summary["completed_jobs"], summary["total_jobs"]) == (1, 1)
    (worker,) = state["plugins"]["jobs"]["workers"]
    assert (worker["key"], worker["last_job_id"], worker["active"]) == ("w1::gpu", job_id, True)
    assert state["plugins"]["transfer"]["completed_total"] == 2
    metrics = (await http.get(f"{url}/metrics")).text
    assert 'nfrx_jobs_finished_total{status="completed"} 1.0' in metrics
    assert 'nfrx_transfers_total{result="complete"} 2.0' in metrics


async def test_client_routes_refuse_bad_requests_with_the_originals_codes(
    server: Server, http: httpx.AsyncClient
) -> None:
    jobs = f"{server.url}/api/jobs"
    headers = as_client(server)
    refused = await http.post(jobs, json={"type": "t"})
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"] == 'Bearer realm="nfrx"'
    assert_error(
        await http.post(jobs, json={"type": "t"}, headers=as_worker(server)), 401, "unauthorized"
    )
    for body, code in [
        (b"{not json", "invalid_request"),
        (b"[1]", "invalid_request"),
        (b"", "invalid_request"),
        (b"{}", "missing_type"),
        (b'{"type": "  "}', "missing_type"),
        (b'{"type": 3}', "invalid_request"),
        (b'{"type": "t", "metadata": [1]}', "invalid_request"),
        (b'{"type": "t", "priority": "high"}', "invalid_request"),
        (b'{"type": "t", "priority": 1e40}', "invalid_request"),
        (b'{"type": "t", "priority": 4294967296}', "invalid_request"),
        (b'{"type": "t", "worker_id": 7}', "invalid_request"),
    ]:
        assert_error(await http.post(jobs, content=body, headers=headers), 400, code)
    too_big = {"type": "t", "metadata": {"blob": "x" * 70_000}}
    assert_error(await http.post(jobs, json=too_big, headers=headers), 413, "request_too_large")
    for method, path in [("GET", "/nope"), ("GET", "/nope/events"), ("POST", "/nope/cancel")]:
        response = await http.request(method, jobs + path, headers=headers)
        assert_error(response, 404, "not_found")
        assert_error(await http.request(method, jobs + path), 401, "unauthorized")


async def test_worker_routes_refuse_bad_requests_and_strangers(
    server: Server, http: httpx.AsyncClient
) -> None:
    jobs = f"{server.url}/api/jobs"
    worker = as_worker(server)
    assert_error(await http.post(f"{jobs}/claim", headers=as_client(server)), 401, "unauthorized")
    assert_error(await http.get(f"{jobs}/stream", headers=as_client(server)), 401, "unauthorized")
    for body in (
        b"{bad",
        b'{"types": "asr"}',
        b'{"types": [1]}',
        b'{"max_wait_seconds": -1}',
        b'{"max_wait_seconds": "soon"}',
        b'{"max_wait_seconds": NaN}',
    ):
        assert_error(
            await http.post(f"{jobs}/claim", content=body, headers=worker), 400, "invalid_request"
        )
    assert await claim(http, server) is None  # nothing queued: 204 at once
    empty = await http.post(f"{jobs}/claim", headers=worker)  # no body at all is fine
    assert empty.status_code == 204
    assert_error(
        await http.get(f"{jobs}/stream?max_active=-1", headers=worker), 400, "invalid_request"
    )
    head = await http.head(f"{jobs}/stream", headers=worker)  # would claim into the void
    assert head.status_code == 405

    for action in ("payload", "result", "status", "heartbeat"):
        body = {"state": "running"} if action == "status" else {}
        assert_error(
            await http.post(f"{jobs}/nope/{action}", json=body, headers=worker), 404, "not_found"
        )
    job_id = await create(http, server)
    for action in ("payload", "result", "heartbeat"):  # queued: no worker holds it
        assert_error(await post(http, server, job_id, action, None), 409, "invalid_state")
    claimed = await claim(http, server)
    assert claimed is not None
    stranger = {**claimed, "lease_token": "not-the-lease"}
    for action in ("payload", "result", "heartbeat"):
        assert_error(await post(http, server, job_id, action, None), 403, "lease_mismatch")
        assert_error(await post(http, server, job_id, action, stranger), 403, "lease_mismatch")
    assert_error(
        await post(http, server, job_id, "status", stranger, {"state": "running"}),
        403,
        "lease_mismatch",
    )
    for body, code in [
        ({}, "missing_state"),
        ({"state": ""}, "missing_state"),
        ({"state": "whatever"}, "unknown_state"),
        ({"state": "failed", "error": {"code": 1}}, "invalid_request"),
        ({"state": "running", "progress": 42}, "invalid_request"),
    ]:
        assert_error(await post(http, server, job_id, "status", claimed, body), 400, code)
    assert_error(
        await post(http, server, job_id, "payload", claimed, {"key": 5}), 400, "invalid_request"
    )
    # The token may also travel in the body.
    in_body = await http.post(
        f"{jobs}/{job_id}/heartbeat", json={"lease_token": claimed["lease_token"]}, headers=worker
    )
    assert in_body.status_code == 200, in_body.text
    assert in_body.json()["status"] == "claimed"
    assert RFC3339.match(in_body.json()["lease_expires_at"])
    failed = await post(
        http,
        server,
        job_id,
        "status",
        claimed,
        {"state": "failed", "error": {"code": "boom", "message": "it broke"}},
    )
    assert failed.json() == {"status": "failed"}
    assert (await get(http, server, job_id))["error"] == {"code": "boom", "message": "it broke"}
    for action in ("payload", "result", "heartbeat"):  # finished
        assert_error(await post(http, server, job_id, action, claimed), 409, "invalid_state")
    assert_error(
        await post(http, server, job_id, "status", claimed, {"state": "running"}),
        409,
        "invalid_state",
    )


async def test_affinity_and_types_decide_who_may_claim(
    server: Server, http: httpx.AsyncClient
) -> None:
    for_w1 = await create(http, server, worker_id="w1")
    for_gpu = await create(http, server, worker_group="gpu")
    for_both = await create(http, server, worker_id="w2", worker_group="gpu")
    convert = await create(http, server, type="doc.convert")
    assert (
        await claim(http, server, worker_id="w9", worker_group="cpu", types=["asr.transcribe"])
        is None
    )
    got = await claim(http, server, worker_id="w2", worker_group="cpu", types=["asr.transcribe"])
    assert got is None  # w2 alone is not w2 in gpu
    got = await claim(http, server, worker_id="w2", worker_group="gpu", types=["asr.transcribe"])
    assert got is not None
    assert got["job_id"] == for_gpu  # first in line that w2@gpu may take
    got = await claim(http, server, worker_id="w2", worker_group="gpu")
    assert got is not None
    assert got["job_id"] == for_both
    got = await claim(http, server, worker_id="w1")
    assert got is not None
    assert got["job_id"] == for_w1
    got = await claim(http, server, types=["doc.convert"])
    assert got is not None
    assert got["job_id"] == convert


async def test_higher_priority_first_and_queue_positions(
    server: Server, http: httpx.AsyncClient
) -> None:
    low = await create(http, server)
    high = await create(http, server, priority=10)
    assert (await get(http, server, high))["queue_position"] == 1
    low_view = await get(http, server, low)
    assert (low_view["queue_position"], "priority" in low_view) == (2, False)
    assert (await get(http, server, high))["priority"] == 10
    first = await claim(http, server)
    assert first is not None
    assert first["job_id"] == high
    assert (await get(http, server, low))["queue_position"] == 1


async def test_a_client_cancel_reaches_the_worker_stream_its_posts_and_its_channels(
    server: Server, http: httpx.AsyncClient
) -> None:
    job_id = await create(http, server)
    jobs = f"{server.url}/api/jobs"
    async with (
        http.stream(
            "GET",
            f"{jobs}/stream?types=asr.transcribe&worker_id=w1&max_active=1",
            headers=as_worker(server),
        ) as worker_stream,
        http.stream("GET", f"{jobs}/{job_id}/events", headers=as_client(server)) as client_stream,
    ):
        work, follow = EventStream(worker_stream), EventStream(client_stream)
        name, claimed = await work.next()
        assert (name, claimed["job_id"], claimed["claimed_worker_id"]) == ("job", job_id, "w1")
        offered = (await post(http, server, job_id, "payload", claimed)).json()
        reading: list[httpx.Response] = []
        async with trio.open_nursery() as nursery:

            async def read_payload() -> None:
                reading.append(
                    await http.get(server.url + offered["reader_url"], headers=as_worker(server))
                )

            nursery.start_soon(read_payload)
            await follow.until("status", status="awaiting_payload")
            await wait_state(server, http, sides_waiting(1))  # the worker waits on its channel
            canceled = await http.post(f"{jobs}/{job_id}/cancel", headers=as_client(server))
            assert canceled.json() == {"status": "canceled"}
            name, revoked = await work.next()
        assert (name, revoked) == ("cancel", {"job_id": job_id, "status": "canceled"})
        assert_error(reading[0], 410, "transfer_closed")  # the worker's wait ended with the job
        final = await follow.until("status", status="canceled")
        assert "error" not in final
        assert await follow.rest() == []
    assert_error(
        await post(http, server, job_id, "status", claimed, {"state": "completed"}),
        409,
        "invalid_state",
    )
    again = await http.post(f"{jobs}/{job_id}/cancel", headers=as_client(server))
    assert again.json() == {"status": "canceled"}


async def test_a_worker_giving_up_ends_the_client_stream(
    server: Server, http: httpx.AsyncClient
) -> None:
    job_id = await create(http, server)
    claimed = await claim(http, server)
    assert claimed is not None
    url = f"{server.url}/api/jobs/{job_id}"
    async with http.stream("GET", f"{url}/events", headers=as_client(server)) as response:
        follow = EventStream(response)
        assert (await follow.next())[1]["status"] == "claimed"
        await post(
            http,
            server,
            job_id,
            "status",
            claimed,
            {"state": "failed", "error": {"code": "oom", "message": "out of memory"}},
        )
        final = await follow.until("status", status="failed")
        assert final["error"] == {"code": "oom", "message": "out of memory"}
        assert await follow.rest() == []
    cancel = await http.post(f"{url}/cancel", headers=as_client(server))
    assert cancel.json() == {"status": "failed"}  # finished: left as it is


async def test_a_worker_may_give_a_job_back_to_the_queue(
    server: Server, http: httpx.AsyncClient
) -> None:
    job_id = await create(http, server)
    first = await claim(http, server, worker_id="w1")
    assert first is not None
    back = await post(http, server, job_id, "status", first, {"state": "queued"})
    assert back.json() == {"status": "queued"}
    assert (await get(http, server, job_id))["queue_position"] == 1
    second = await claim(http, server, worker_id="w2")
    assert second is not None
    assert second["job_id"] == job_id
    assert_error(await post(http, server, job_id, "heartbeat", first), 403, "lease_mismatch")
