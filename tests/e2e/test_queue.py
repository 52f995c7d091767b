"""The dispatch queue, end to end: FIFO with compatibility skipping, limits, queue events, timeouts.

Every "busy" here is a real request the fixture backend holds open (``hang``); it is released by
cancelling its client, which is itself the cancellation path under test. Progress is observed
through the server's log lines and the backend's records, never through sleeps.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio

from tests.e2e.harness import NfrxProcess, Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, RecordedRequest, run_backend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def chat(content: str, model: str = "fixture-model", **fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if fixture:
        body["fixture"] = fixture
    return body


def stream_chat(content: str, model: str = "fixture-model", **fixture: Any) -> dict[str, Any]:
    return {**chat(content, model, **fixture), "stream": True}


def contents(backend: FixtureBackend) -> list[str]:
    """The user message of every chat request the backend received, in arrival order."""
    return [
        r.json()["messages"][0]["content"]
        for r in backend.requests
        if r.path == "/v1/chat/completions"
    ]


async def arrived(backend: FixtureBackend, content: str) -> RecordedRequest:
    """Wait until the backend received the chat request whose user message is ``content``."""
    n = 1
    while True:
        record = await backend.wait_for_request(n)
        if (
            record.path == "/v1/chat/completions"
            and record.json()["messages"][0]["content"] == content
        ):
            return record
        n += 1


async def first_chat(backend: FixtureBackend) -> RecordedRequest:
    n = 1
    while (record := await backend.wait_for_request(n)).path != "/v1/chat/completions":
        n += 1
    return record


class Client:
    """httpx against the server's LLM API, one request per task, each cancellable."""

    def __init__(self, server: Server, http: httpx.AsyncClient) -> None:
        self.server = server
        self.http = http
        self.results: dict[str, httpx.Response] = {}
        self.scopes: dict[str, trio.CancelScope] = {}

    async def post(self, request_id: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(
            f"{self.server.api_base}/chat/completions",
            json=body,
            headers={**self.server.headers(), "X-Request-Id": request_id},
        )

    def start(self, nursery: trio.Nursery, request_id: str, body: dict[str, Any]) -> None:
        """Send in the background; the response lands in :attr:`results` (unless cancelled)."""
        scope = trio.CancelScope()
        self.scopes[request_id] = scope

        async def run() -> None:
            with scope:
                self.results[request_id] = await self.post(request_id, body)

        nursery.start_soon(run)

    def cancel(self, request_id: str) -> None:
        self.scopes[request_id].cancel()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def queued(server: Server, request_id: str, position: int | None = None) -> None:
    pattern = rf"request {request_id} for \S+ queued at position "
    pattern += str(position) if position is not None else r"\d+"
    await server.proc.wait_for_line(pattern)


async def hold(
    client: Client, nursery: trio.Nursery, backend: FixtureBackend, request_id: str
) -> None:
    """Occupy one agent slot with a request the backend never answers."""
    client.start(nursery, request_id, chat(request_id, hang=True))
    await arrived(backend, request_id)


@attrs.define
class Busy:
    server: Server
    backend: FixtureBackend
    client: Client
    nursery: trio.Nursery


@asynccontextmanager
async def busy_gateway(
    http: httpx.AsyncClient, env: dict[str, str] | None = None
) -> AsyncIterator[Busy]:
    """A server (with ``env``) and one capacity-1 agent whose slot request "busy" holds until
    ``client.cancel("busy")`` (or the end of the block). Requests started in the nursery are
    complete once the block has ended."""
    async with (
        run_server(env=env) as server,
        run_backend() as backend,
        run_agent(server, backend.base_url),
    ):
        client = Client(server, http)
        async with trio.open_nursery() as nursery:
            await hold(client, nursery, backend, "busy")
            yield Busy(server, backend, client, nursery)
            client.cancel("busy")


async def test_busy_model_queues_in_fifo_order_and_dispatches_when_a_slot_frees(
    server: Server, backend: FixtureBackend, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    client = Client(server, http)
    async with trio.open_nursery() as nursery:
        await hold(client, nursery, backend, "busy")
        for n, request_id in enumerate(("first", "second", "third"), start=1):
            client.start(nursery, request_id, chat(request_id))
            await queued(server, request_id, n)
        client.cancel("busy")  # the slot frees: the queue drains in order, one at a time
    assert contents(backend) == ["busy", "first", "second", "third"]
    for request_id in ("first", "second", "third"):
        response = client.results[request_id]
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == request_id


async def test_a_queued_request_for_another_model_is_not_blocked(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with (
        run_backend(models=("m1",)) as b1,
        run_backend(models=("m2",)) as b2,
        run_agent(server, b1.base_url, name="one"),
        run_agent(server, b2.base_url, name="two"),
    ):
        client = Client(server, http)
        async with trio.open_nursery() as nursery:
            client.start(nursery, "hold-1", chat("hold-1", "m1", hang=True))
            client.start(nursery, "hold-2", chat("hold-2", "m2", hang=True))
            await arrived(b1, "hold-1")
            await arrived(b2, "hold-2")
            client.start(nursery, "wants-m1", chat("wants-m1", "m1"))
            await queued(server, "wants-m1", 1)
            client.start(nursery, "wants-m2", chat("wants-m2", "m2"))
            await queued(server, "wants-m2", 2)
            # m2's agent frees first: the younger request it can serve goes ahead of the older
            # one it cannot.
            client.cancel("hold-2")
            await arrived(b2, "wants-m2")
            assert contents(b2) == ["hold-2", "wants-m2"]
            assert "wants-m1" not in client.results
            client.cancel("hold-1")
        assert contents(b1) == ["hold-1", "wants-m1"]
        assert client.results["wants-m1"].status_code == 200
        assert client.results["wants-m2"].status_code == 200


async def test_a_full_queue_answers_503_worker_busy_at_once(http: httpx.AsyncClient) -> None:
    async with busy_gateway(http, {"LLM_QUEUE_SIZE": "1"}) as b:
        b.client.start(b.nursery, "waits", chat("waits"))
        await queued(b.server, "waits", 1)
        refused = await b.client.post("refused", chat("refused"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "worker_busy"
        assert "queue is full" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        b.client.cancel("busy")
    assert b.client.results["waits"].status_code == 200
    assert "refused" not in contents(b.backend)


async def test_with_queueing_off_a_busy_model_answers_503_and_an_unknown_one_404(
    http: httpx.AsyncClient,
) -> None:
    async with busy_gateway(http, {"LLM_QUEUE_SIZE": "0"}) as b:
        refused = await b.client.post("refused", chat("refused"))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "worker_busy"
        assert "queueing is off" in refused.json()["error"]["message"]
        unknown = await b.client.post("unknown", chat("unknown", "no-such-model"))
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"


async def test_queue_timeout_answers_503_and_the_request_never_runs(
    http: httpx.AsyncClient,
) -> None:
    async with busy_gateway(http, {"LLM_QUEUE_TIMEOUT": "0.3"}) as b:
        late = await b.client.post("late", chat("late"))
        assert late.status_code == 503
        assert late.json()["error"]["code"] == "queue_timeout"
        assert "retry-after" in late.headers
        await b.server.proc.wait_for_line(r"request late left the queue")
        b.client.cancel("busy")
        after = await b.client.post("after", chat("after"))
        assert after.status_code == 200
    assert contents(b.backend) == ["busy", "after"]


async def test_a_client_that_leaves_the_queue_is_never_dispatched(
    server: Server, backend: FixtureBackend, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    client = Client(server, http)
    async with trio.open_nursery() as nursery:
        await hold(client, nursery, backend, "busy")
        client.start(nursery, "gone", chat("gone"))
        await queued(server, "gone", 1)
        client.cancel("gone")
        await server.proc.wait_for_line(r"request gone left the queue at position 1")
        client.cancel("busy")
    after = await client.post("after", chat("after"))
    assert after.status_code == 200
    assert contents(backend) == ["busy", "after"]


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """``(event name, data)`` of every event in a complete SSE body."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if name is not None or data:
            events.append((name, "\n".join(data)))
    return events


def sse_comments(raw: str, prefix: str) -> list[str]:
    """The text after ``: <prefix>`` of every comment line of an SSE body."""
    lines = raw.replace("\r\n", "\n").split("\n")
    return [line[2 + len(prefix) :] for line in lines if line.startswith(f": {prefix}")]


class SseReader:
    """Reads a streaming response's events incrementally."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_text()
        self.raw = ""

    async def until(self, name: str, count: int = 1) -> list[tuple[str | None, str]]:
        """Read until ``count`` events called ``name`` arrived; all events so far."""
        async for text in self._chunks:
            self.raw += text
            events = sse_events(self.raw[: self.raw.rfind("\n\n") + 2])
            if sum(1 for n, _ in events if n == name) >= count:
                return events
        raise AssertionError(f"the stream ended before {count} {name!r} events: {self.raw!r}")

    async def until_comments(self, prefix: str, count: int = 1) -> list[str]:
        """Read until ``count`` comment lines starting with ``prefix`` arrived; the rest of
        each such line."""
        async for text in self._chunks:
            self.raw += text
            found = sse_comments(self.raw[: self.raw.rfind("\n\n") + 2], prefix)
            if len(found) >= count:
                return found
        raise AssertionError(f"the stream ended before {count} {prefix!r} comments: {self.raw!r}")

    async def all(self) -> list[tuple[str | None, str]]:
        """Every event of the stream, read to its end."""
        async for text in self._chunks:
            self.raw += text
        return sse_events(self.raw)


async def test_a_waiting_stream_gets_queue_comments_then_the_generation(
    http: httpx.AsyncClient,
) -> None:
    async with (
        busy_gateway(http, {"LLM_QUEUE_UPDATE_SECONDS": "0.1"}) as b,
        http.stream(
            "POST",
            f"{b.server.api_base}/chat/completions",
            json=stream_chat("waiting"),
            headers={**b.server.headers(), "X-Request-Id": "waiting"},
        ) as response,
    ):
        # The head and the first update come at once, while the request still waits: as SSE
        # comments, which every SSE client skips (no event for the openai SDK to choke on).
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "waiting"
        reader = SseReader(response)
        updates = await reader.until_comments("nfrx.queue ", 3)
        assert json.loads(updates[0]) == {
            "type": "nfrx.queue",
            "request_id": "waiting",
            "model": "fixture-model",
            "position": 1,
        }
        assert sse_events(reader.raw) == []
        b.client.cancel("busy")
        everything = await reader.all()
    assert everything[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in everything)
    chunks = [json.loads(data) for _, data in everything[:-1]]
    assert chunks
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert contents(b.backend) == ["busy", "waiting"]


@pytest.mark.parametrize(
    ("env", "headers"),
    [
        pytest.param({}, {"X-Nfrx-Queue-Events": "events"}, id="header"),
        pytest.param({"LLM_QUEUE_EVENT_STYLE": "events"}, {}, id="setting"),
    ],
)
async def test_a_waiting_stream_gets_named_queue_events_when_asked(
    http: httpx.AsyncClient, env: dict[str, str], headers: dict[str, str]
) -> None:
    async with (
        busy_gateway(http, {"LLM_QUEUE_UPDATE_SECONDS": "0.1", **env}) as b,
        http.stream(
            "POST",
            f"{b.server.api_base}/chat/completions",
            json=stream_chat("waiting"),
            headers={**b.server.headers(), "X-Request-Id": "waiting", **headers},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-request-id"] == "waiting"
        reader = SseReader(response)
        events = await reader.until("nfrx.queue", 3)
        first = json.loads(events[0][1])
        assert first == {
            "type": "nfrx.queue",
            "request_id": "waiting",
            "model": "fixture-model",
            "position": 1,
        }
        b.client.cancel("busy")
        everything = await reader.all()
    rest = everything[len(events) :]
    assert all(name == "nfrx.queue" for name, _ in everything[: len(events)])
    rest = [(n, d) for n, d in rest if n != "nfrx.queue"]
    assert rest[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for name, data in rest[:-1] if name is None]
    assert chunks
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert contents(b.backend) == ["busy", "waiting"]


async def test_a_client_may_choose_comments_over_the_setting(
    http: httpx.AsyncClient,
) -> None:
    async with (
        busy_gateway(http, {"LLM_QUEUE_EVENT_STYLE": "events"}) as b,
        http.stream(
            "POST",
            f"{b.server.api_base}/chat/completions",
            json=stream_chat("waiting"),
            headers={**b.server.headers(), "X-Nfrx-Queue-Events": "Comments"},
        ) as response,
    ):
        reader = SseReader(response)
        await reader.until_comments("nfrx.queue ")
        b.client.cancel("busy")
        everything = await reader.all()
    assert all(name is None for name, _ in everything)
    assert everything[-1] == (None, "[DONE]")


@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
async def test_an_unknown_queue_events_header_is_a_400(
    server: Server, http: httpx.AsyncClient, path: str
) -> None:
    response = await http.post(
        f"{server.api_base}{path}",
        json={**stream_chat("x"), "max_tokens": 8},
        headers={**server.headers(), "X-Nfrx-Queue-Events": "loud"},
    )
    assert response.status_code == 400
    body = response.json()
    if path == "/messages":
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
    else:
        assert body["error"]["code"] == "invalid_header"
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
    assert message == "X-Nfrx-Queue-Events must be one of comments, events, not 'loud'"


async def test_with_queue_events_off_a_waiting_stream_starts_with_the_generation(
    http: httpx.AsyncClient,
) -> None:
    async with busy_gateway(http, {"LLM_QUEUE_EVENTS": "false"}) as b:
        b.client.start(b.nursery, "waiting", stream_chat("waiting"))
        await queued(b.server, "waiting", 1)
        b.client.cancel("busy")
    response = b.client.results["waiting"]
    assert response.status_code == 200
    events = sse_events(response.text)
    assert all(name != "nfrx.queue" for name, _ in events)
    assert events[-1] == (None, "[DONE]")


async def test_an_upstream_error_after_queue_events_is_a_final_error_event(
    http: httpx.AsyncClient,
) -> None:
    async with (
        busy_gateway(http, {"LLM_QUEUE_EVENT_STYLE": "events"}) as b,
        http.stream(
            "POST",
            f"{b.server.api_base}/chat/completions",
            json=stream_chat("refused", status=400),
            headers=b.server.headers(),
        ) as response,
    ):
        assert response.status_code == 200
        reader = SseReader(response)
        await reader.until("nfrx.queue")
        b.client.cancel("busy")
        events = [(n, d) for n, d in await reader.all() if n != "nfrx.queue"]
    assert [name for name, _ in events] == ["error"], reader.raw
    error = json.loads(events[0][1])["error"]
    assert error["code"] == "upstream_status"
    assert error["status"] == 400
    assert error["body"]["error"]["message"]  # the b.backend's own error, quoted whole


async def test_an_upstream_error_status_is_kept_when_nothing_was_sent_yet(
    server: Server, backend: FixtureBackend, agent: NfrxProcess, http: httpx.AsyncClient
) -> None:
    response = await Client(server, http).post("direct", stream_chat("direct", status=400))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["message"]


async def test_idle_timeout_answers_504_and_cancels_the_backend_request(
    http: httpx.AsyncClient,
) -> None:
    async with (
        run_server(env={"LLM_IDLE_TIMEOUT": "0.3"}) as server,
        run_backend() as backend,
        run_agent(server, backend.base_url),
    ):
        client = Client(server, http)
        response = await client.post("silent", chat("silent", hang=True))
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "idle_timeout"
        record = await arrived(backend, "silent")
        with trio.fail_after(10):
            await record.done.wait()
        assert record.disconnected

        # A stream that goes quiet after its first event ends with an SSE error event.
        async with http.stream(
            "POST",
            f"{server.api_base}/chat/completions",
            json=stream_chat("slow", events=3, interval=30),
            headers=server.headers(),
        ) as streamed:
            assert streamed.status_code == 200
            raw = "".join([text async for text in streamed.aiter_text()])
        events = sse_events(raw)
        assert events[-1][0] == "error", raw
        assert json.loads(events[-1][1])["error"]["code"] == "idle_timeout"
        record = await arrived(backend, "slow")
        with trio.fail_after(10):
            await record.done.wait()
        assert record.disconnected


async def test_three_idle_agents_each_get_one_of_three_concurrent_requests(
    server: Server, http: httpx.AsyncClient
) -> None:
    async with (
        run_backend() as b1,
        run_backend() as b2,
        run_backend() as b3,
        run_agent(server, b1.base_url, name="one"),
        run_agent(server, b2.base_url, name="two"),
        run_agent(server, b3.base_url, name="three"),
    ):
        client = Client(server, http)
        async with trio.open_nursery() as nursery:
            for n in range(3):
                client.start(nursery, f"r{n}", chat(f"r{n}", hang=True))
            # Each backend gets one: any other spread would leave one of these waiting.
            with trio.fail_after(20):
                held = [await first_chat(b) for b in (b1, b2, b3)]
            assert [len(contents(b)) for b in (b1, b2, b3)] == [1, 1, 1]
            nursery.cancel_scope.cancel()
        for record in held:  # the backend saw the cancellation, so the server freed the slot
            with trio.fail_after(10):
                await record.done.wait()
        # One after another, equal idle agents take turns.
        for n in range(3):
            response = await client.post(f"s{n}", chat(f"s{n}"))
            assert response.status_code == 200
        assert [len(contents(b)) for b in (b1, b2, b3)] == [2, 2, 2]
