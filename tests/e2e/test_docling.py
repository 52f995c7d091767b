"""The Docling plugin end to end: httpx -> nfrx serve -> nfrx docling -> a docling-shaped fixture.

Covers sync and async conversion, sticky async tasks across two agents, and the streamed upload
path: a large body with bounded memory, the upload limit, and a client leaving mid-upload.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

from tests.e2e.harness import Server, run_plugin_agent, run_server
from tests.fixtures.docling import DoclingBackend, run_docling

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.e2e.harness import NfrxProcess

MiB = 1024 * 1024


@pytest.fixture
async def docling() -> AsyncIterator[DoclingBackend]:
    async with run_docling("docling-a") as backend:
        yield backend


@pytest.fixture
async def docling_agent(server: Server, docling: DoclingBackend) -> AsyncIterator[NfrxProcess]:
    env = {"DOC_BASE_URL": docling.base_url, "DOC_API_KEY": "backend-key"}
    async with run_plugin_agent(server, "docling", env) as agent:
        yield agent


def _api(server: Server) -> str:
    return f"{server.url}/api/docling/v1"


async def test_the_server_logs_no_model_count_for_a_docling_agent(
    server: Server, docling_agent: NfrxProcess
) -> None:
    line = await server.proc.wait_for_line(r"docling agent \S+ \(\S+\) connected from ")
    assert line.string.endswith(": ready, capacity 1"), line.string


async def test_sync_conversions_relay_and_keep_client_keys(
    server: Server, docling: DoclingBackend, docling_agent: NfrxProcess
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        source = await http.post(
            f"{_api(server)}/convert/source",
            json={"http_sources": [{"url": "https://example.com/a.pdf"}]},
            headers={**server.headers(), "X-Api-Key": server.api_key},
        )
        content = b"%PDF-1.4 fixture"
        upload = await http.post(
            f"{_api(server)}/convert/file",
            files={"files": ("a.pdf", content, "application/pdf")},
            headers=server.headers(),
        )
    assert source.status_code == 200, source.text
    answer = source.json()
    assert answer["instance"] == "docling-a"
    seen = answer["headers"]
    assert seen["x-api-key"] == "backend-key"  # DOC_API_KEY, never the client's key
    assert "authorization" not in seen
    assert upload.status_code == 200, upload.text
    assert upload.json()["document"]["md_content"] == "# converted by docling-a"
    rec = docling.recorder.uploads[1]
    assert rec.path == "/v1/convert/file"
    assert b"%PDF-1.4 fixture" in rec.head


async def test_async_tasks_stick_to_the_agent_that_issued_them(server: Server) -> None:
    async with (
        run_docling("docling-a") as first,
        run_docling("docling-b") as second,
        run_plugin_agent(server, "docling", {"DOC_BASE_URL": first.base_url}, name="a"),
        run_plugin_agent(server, "docling", {"DOC_BASE_URL": second.base_url}, name="b"),
        httpx.AsyncClient(timeout=30) as http,
    ):
        issued: dict[str, str] = {}  # task id -> instance that holds it
        for n in range(6):
            response = await http.post(
                f"{_api(server)}/convert/source/async",
                json={"n": n},
                headers=server.headers(),
            )
            assert response.status_code == 200, response.text
            task_id = response.json()["task_id"]
            issued[task_id] = "docling-a" if task_id in first.tasks else "docling-b"
        assert set(issued.values()) == {"docling-a", "docling-b"}  # both agents got work
        for task_id, instance in issued.items():
            poll = await http.get(
                f"{_api(server)}/status/poll/{task_id}?wait=1", headers=server.headers()
            )
            assert poll.status_code == 200, poll.text
            assert poll.json()["instance"] == instance
            assert poll.json()["query"] == "wait=1"
            result = await http.get(f"{_api(server)}/result/{task_id}", headers=server.headers())
            assert result.status_code == 200, result.text
            assert result.json()["instance"] == instance
        unknown = await http.get(f"{_api(server)}/result/nope", headers=server.headers())
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "task_not_found"


async def test_task_of_a_departed_agent_is_a_clear_404(server: Server) -> None:
    async with (
        run_docling("docling-a") as backend,
        httpx.AsyncClient(timeout=30) as http,
    ):
        async with run_plugin_agent(server, "docling", {"DOC_BASE_URL": backend.base_url}):
            response = await http.post(
                f"{_api(server)}/convert/source/async", json={}, headers=server.headers()
            )
            task_id = response.json()["task_id"]
        await server.proc.wait_for_line(r"docling agent alpha \(\S+\) disconnected")
        poll = await http.get(f"{_api(server)}/status/poll/{task_id}", headers=server.headers())
        assert poll.status_code == 404
        assert poll.json()["error"]["code"] == "task_agent_gone"


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_large_upload_streams_with_bounded_memory(
    server: Server, docling: DoclingBackend, docling_agent: NfrxProcess
) -> None:
    total = 200 * MiB
    digest = hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        block = bytes(range(256)) * 256  # 64 KiB
        for i in range(total // len(block)):
            chunk = block[:-4] + i.to_bytes(4, "big")
            digest.update(chunk)
            yield chunk

    before = (_rss(server.proc.process.pid), _rss(docling_agent.process.pid))
    async with httpx.AsyncClient(timeout=120) as http:
        response = await http.post(
            f"{_api(server)}/convert/file",
            content=generate(),
            headers={**server.headers(), "Content-Type": "application/octet-stream"},
        )
    after = (_rss(server.proc.process.pid), _rss(docling_agent.process.pid))
    assert response.status_code == 200, response.text
    received = response.json()["received"]
    assert received == {"bytes": total, "sha256": digest.hexdigest()}
    assert after[0] - before[0] < 64 * MiB, (before, after)
    assert after[1] - before[1] < 64 * MiB, (before, after)


async def test_upload_limit_answers_413(docling: DoclingBackend) -> None:
    async with (
        run_server(env={"MAX_UPLOAD_BYTES": "100000"}) as server,
        run_plugin_agent(server, "docling", {"DOC_BASE_URL": docling.base_url}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        declared = await http.post(
            f"{_api(server)}/convert/file", content=b"x" * 200_000, headers=server.headers()
        )
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"
        assert docling.recorder.uploads == []  # refused before any agent saw it

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 16384

        streamed = await http.post(
            f"{_api(server)}/convert/file", content=chunked(), headers=server.headers()
        )
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "request_too_large"
        # The limit may be crossed before the agent was sent anything (nothing reaches the
        # backend) or while it was forwarding: then the backend request was cut, not completed.
        for rec in docling.recorder.uploads:
            with trio.fail_after(30):
                await rec.done.wait()
            assert not rec.complete


async def test_client_leaving_mid_upload_cancels_the_backend_request(
    server: Server, docling: DoclingBackend, docling_agent: NfrxProcess
) -> None:
    sent_some = trio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"z" * 65536
        sent_some.set()
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:

        async def post() -> None:
            await http.post(
                f"{_api(server)}/convert/file", content=slow(), headers=server.headers()
            )

        nursery.start_soon(post)
        rec = await docling.recorder.wait_for(1)
        with trio.fail_after(30):
            await rec.started.wait()
        nursery.cancel_scope.cancel()  # the client goes away mid-upload
    with trio.fail_after(30):
        await rec.done.wait()
    assert rec.disconnected
    assert not rec.complete
