"""The Docling plugin's server side in process (:mod:`nfrx.plugins.docling.server`): conversions
and sticky async tasks, relayed to scripted agents on in-memory tunnels."""

from __future__ import annotations

import itertools
import json

from nfrx.transport.streams import IncomingStream
from tests.server.app_harness import JSON_HEAD, Handler, Seen, answer, serve_app

API = "/api/docling/v1"
DOCUMENT = {"document": {"md_content": "# Title"}, "status": "success"}


def docling_serve(name: str) -> Handler:
    """A docling-serve behind agent ``name``: it converts, issues task ids ``<name>-<n>`` for
    async submissions, and answers polls and results for its own tasks only."""
    numbers = itertools.count(1)

    async def handler(stream: IncomingStream, seen: Seen) -> None:
        path = seen.path
        if path.endswith("/async"):
            body = {"task_id": f"{name}-{next(numbers)}", "task_status": "pending"}
        elif path.startswith(("/v1/status/poll/", "/v1/result/")):
            task_id = path.split("?")[0].rsplit("/", 1)[1]
            if not task_id.startswith(f"{name}-"):
                await stream.send_response(404, JSON_HEAD, data=b'{"detail": "no task"}', end=True)
                return
            body = {"task_id": task_id, "task_status": "success", "agent": name}
        else:
            body = DOCUMENT
        await stream.send_response(200, JSON_HEAD, data=json.dumps(body).encode(), end=True)

    return handler


async def test_a_conversion_streams_the_body_to_an_agent_and_back() -> None:
    upload = (
        b"--b\r\nContent-Disposition: form-data; name=files; filename=a.pdf\r\n\r\n%PDF\r\n--b--"
    )
    async with serve_app() as app, app.client() as client:
        await app.agent("docling", "d1", answer(200, DOCUMENT), models=("docling",))
        source = await client.post(f"{API}/convert/source", json={"sources": []})
        converted = await client.post(
            f"{API}/convert/file",
            content=upload,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    assert source.status_code == converted.status_code == 200
    assert source.json() == converted.json() == DOCUMENT
    assert [(s.method, s.path) for s in app.seen] == [
        ("POST", "/v1/convert/source"),
        ("POST", "/v1/convert/file"),
    ]
    assert app.seen[1].body == upload
    assert app.seen[1].headers["content-type"] == "multipart/form-data; boundary=b"


async def test_async_tasks_stick_to_the_agent_that_issued_them() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("docling", "a", docling_serve("a"), models=("docling",))
        await app.agent("docling", "b", docling_serve("b"), models=("docling",))
        tasks = []
        for _ in range(4):
            submitted = await client.post(f"{API}/convert/source/async", json={"sources": []})
            assert submitted.status_code == 200
            tasks.append(submitted.json()["task_id"])
        assert {task.split("-")[0] for task in tasks} == {"a", "b"}  # both agents took some
        for task in tasks:
            poll = await client.get(f"{API}/status/poll/{task}", params={"wait": "1"})
            result = await client.get(f"{API}/result/{task}")
            assert poll.status_code == result.status_code == 200
            assert poll.json()["agent"] == result.json()["agent"] == task.split("-")[0]
    polls = [s for s in app.seen if s.path.startswith("/v1/status/poll/")]
    assert all(s.path.endswith("?wait=1") for s in polls)


async def test_unknown_and_orphaned_tasks_are_clear_404s() -> None:
    async with serve_app() as app, app.client() as client:
        record = await app.agent("docling", "a", docling_serve("a"), models=("docling",))
        task = (await client.post(f"{API}/convert/source/async", json={})).json()["task_id"]
        unknown = await client.get(f"{API}/status/poll/nope")
        app.gateway.registry.remove(record)  # what the connect route does when it leaves
        orphaned = await client.get(f"{API}/result/{task}")
    assert unknown.status_code == orphaned.status_code == 404
    assert unknown.json()["error"] == {
        "message": "no docling task 'nope' is known to this server",
        "type": "invalid_request_error",
        "code": "task_not_found",
    }
    assert orphaned.json()["error"]["code"] == "task_agent_gone"
    assert "'a'" in orphaned.json()["error"]["message"]


async def test_without_an_agent_a_conversion_is_404() -> None:
    async with serve_app() as app, app.client() as client:
        response = await client.post(f"{API}/convert/source", json={})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "no docling agent is connected",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }


async def test_an_upload_over_the_limit_is_413() -> None:
    async with serve_app(max_upload_bytes=1024) as app, app.client() as client:
        await app.agent("docling", "d1", answer(200, DOCUMENT), models=("docling",))
        response = await client.post(f"{API}/convert/file", content=b"x" * 4096)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert app.seen == []
