"""Tests of the in-process OpenAI-compatible fixture backend (tests/fixtures/backend.py)."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio
import trio.testing

from tests.fixtures.backend import FixtureBackend, RecordedRequest, run_backend

MODELS = ["fixture-model", "org/llama3:8b"]

# The openai SDK breaks out of its SSE iterator at ``data: [DONE]`` without
# ``aclose()``-ing its chain of async generators (openai -> httpx2 -> httpcore2),
# and httpx/httpcore do the same when a client stops reading a stream early.
# Under Trio the GC finalizer turns that into a ResourceWarning, which
# ``filterwarnings = error`` would escalate.  Not a fixture problem.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2?|httpcore2?)\.:ResourceWarning"
)


@pytest.fixture
async def backend() -> AsyncIterator[FixtureBackend]:
    async with run_backend(models=MODELS) as running:
        yield running


@pytest.fixture
async def client(backend: FixtureBackend) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=backend.base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
async def http(backend: FixtureBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.base_url, timeout=30) as c:
        yield c


def chat_body(*, stream: bool = False, **fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "fixture-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    if fixture:
        body["fixture"] = fixture
    return body


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of a complete SSE body."""
    return [
        line.removeprefix("data: ")
        for block in text.split("\n\n")
        for line in block.splitlines()
        if line.startswith("data: ")
    ]


async def post(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    await http.post(url, json=body)


async def wait_done(rec: RecordedRequest) -> None:
    with trio.fail_after(5):
        await rec.done.wait()


# -- basics -----------------------------------------------------------------------------


async def test_base_url_shape(backend: FixtureBackend) -> None:
    assert backend.base_url.startswith("http://127.0.0.1:")
    assert backend.base_url.endswith("/v1")
    port = backend.base_url.removeprefix("http://127.0.0.1:").removesuffix("/v1")
    assert int(port) > 0
    assert backend.root_url + "/v1" == backend.base_url
    assert backend.requests == []


async def test_models_list_and_retrieve(
    backend: FixtureBackend, client: openai.AsyncOpenAI
) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == MODELS
    assert all(m.owned_by == "fixture" and m.created == 1700000000 for m in page.data)

    model = await client.models.retrieve("org/llama3:8b")
    assert model.id == "org/llama3:8b"
    assert model.object == "model"
    # The SDK percent-encodes the "/"; the recorded path is the decoded ASGI path.
    assert backend.requests[-1].path == "/v1/models/org/llama3:8b"
    assert backend.requests[-1].method == "GET"

    with pytest.raises(openai.NotFoundError) as excinfo:
        await client.models.retrieve("nope:1b")
    assert excinfo.value.code == "model_not_found"

    backend.models.append("late:2b")
    backend.models.remove("fixture-model")
    page = await client.models.list()
    assert [m.id for m in page.data] == ["org/llama3:8b", "late:2b"]
    assert (await client.models.retrieve("late:2b")).id == "late:2b"

    assert len(backend.requests) == 5
    for rec in backend.requests:
        assert rec.done.is_set()
        assert rec.finished_at is not None
        assert rec.finished_at >= rec.started_at
        assert not rec.disconnected


async def test_unknown_route_is_recorded_404(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    resp = await http.get("/nothing/here", params={"q": "1"})
    assert resp.status_code == 404
    assert resp.headers["x-fixture"] == "not-found"
    assert "error" in resp.json()
    assert backend.requests[0].path == "/v1/nothing/here"


# -- non-streaming ----------------------------------------------------------------------


async def test_chat_non_streaming_sdk(backend: FixtureBackend, client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="fixture-model",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
    )
    assert raw.headers["x-fixture"] == "ok"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id == "chatcmpl-fixture-1"
    assert completion.created == 1700000000
    assert completion.model == "fixture-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "hello from fixture"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
    }
    assert completion.usage.total_tokens == 7

    rec = await backend.wait_for_request()
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["content-type"] == "application/json"
    assert rec.headers["authorization"] == "Bearer x"
    sent = json.loads(rec.body)
    assert sent["model"] == "fixture-model"
    assert sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    await wait_done(rec)
    assert not rec.disconnected


async def test_body_recorded_byte_exact(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    body = b'{ "model" : "fixture-model",\n "messages": [], "x": "\xc3\xa9" }'
    resp = await http.post(
        "/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200
    assert backend.requests[0].body == body
    assert backend.requests[0].json()["x"] == "é"


async def test_other_endpoints_sdk(backend: FixtureBackend, client: openai.AsyncOpenAI) -> None:
    completion = await client.completions.create(model="m1", prompt="say hi")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "hello from fixture"
    assert completion.model == "m1"

    # The SDK asks for base64 by default and decodes it; both formats are served.
    emb = await client.embeddings.create(model="e1", input=["a", "abc"])
    assert [d.embedding for d in emb.data] == [[1.0, 0.0], [3.0, 1.0]]
    assert [d.index for d in emb.data] == [0, 1]
    assert emb.usage.prompt_tokens == 2
    assert json.loads(backend.requests[-1].body)["encoding_format"] == "base64"
    emb = await client.embeddings.create(model="e1", input="hello", encoding_format="float")
    assert [d.embedding for d in emb.data] == [[5.0, 0.0]]

    resp = await client.responses.create(model="r1", input="hi")
    assert resp.id == "resp_fixture"
    assert resp.status == "completed"
    assert resp.output_text == "hello from fixture"
    assert resp.usage is not None
    assert resp.usage.total_tokens == 7

    assert [r.path for r in backend.requests] == [
        "/v1/completions",
        "/v1/embeddings",
        "/v1/embeddings",
        "/v1/responses",
    ]


async def test_echo_headers_and_big(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/chat/completions",
        json=chat_body(echo_headers=True, big=2_000_000),
        headers={"X-Custom-Thing": "abc"},
    )
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["fixture_headers"]["x-custom-thing"] == "abc"
    assert answer["fixture_headers"]["host"] == backend.root_url.removeprefix("http://")
    assert answer["padding"] == "x" * 2_000_000
    assert answer["choices"][0]["message"]["content"] == "hello from fixture"


async def test_big_request_body(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    body = chat_body()
    body["messages"][0]["content"] = "y" * 5_000_000
    resp = await http.post("/chat/completions", json=body)
    assert resp.status_code == 200
    assert len(backend.requests[0].body) > 5_000_000


async def test_sdk_extra_body_controls_fixture(
    backend: FixtureBackend, client: openai.AsyncOpenAI
) -> None:
    completion = await client.chat.completions.create(
        model="fixture-model",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"fixture": {"echo_headers": True}},
    )
    extra = completion.model_extra or {}
    assert extra["fixture_headers"]["authorization"] == "Bearer x"
    assert json.loads(backend.requests[0].body)["fixture"] == {"echo_headers": True}


# -- errors -----------------------------------------------------------------------------


async def test_status_and_error_body(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    custom = {"error": {"message": "slow down", "type": "rate_limit", "code": "rl"}}
    resp = await http.post("/chat/completions", json=chat_body(status=429, error_body=custom))
    assert resp.status_code == 429
    assert resp.json() == custom
    assert resp.headers["x-fixture"] == "error"

    resp = await http.post(
        "/embeddings", json={"model": "m", "input": "x", "fixture": {"status": 500}}
    )
    assert resp.status_code == 500
    assert "500" in resp.json()["error"]["message"]
    assert resp.headers["x-fixture"] == "error"

    resp = await http.post("/chat/completions", json=chat_body(status=418, error_body=[1, 2]))
    assert resp.status_code == 418
    assert resp.json() == [1, 2]

    assert all(rec.done.is_set() and not rec.disconnected for rec in backend.requests)


async def test_status_with_sdk(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as excinfo:
        await client.chat.completions.create(
            model="fixture-model",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"fixture": {"status": 502}},
        )
    assert excinfo.value.status_code == 502
    assert excinfo.value.response.headers["x-fixture"] == "error"


async def test_bad_requests_are_400(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    cases: list[bytes] = [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"messages": []}).encode(),
        json.dumps({"model": "", "messages": []}).encode(),
        json.dumps(chat_body(typo=1)).encode(),
        json.dumps(chat_body(delay="1")).encode(),
        json.dumps(chat_body(status=99)).encode(),
        json.dumps(chat_body(hang=1)).encode(),
    ]
    for body in cases:
        resp = await http.post(
            "/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400, body
        assert resp.headers["x-fixture"] == "bad-request"
        assert resp.json()["error"]["type"] == "invalid_request_error"
    resp = await http.post("/embeddings", json={"model": "m", "input": [{"no": 1}]})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "input"
    assert len(backend.requests) == len(cases) + 1


async def test_missing_model_is_sdk_bad_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}])


async def test_down(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    backend.down = True
    for resp in [
        await http.get("/models"),
        await http.get("/models/fixture-model"),
        await http.post("/chat/completions", json=chat_body()),
        await http.post("/chat/completions", json=chat_body(stream=True)),
        await http.post("/embeddings", json={"model": "m", "input": "x"}),
        await http.post("/chat/completions", content=b"{garbage"),
    ]:
        assert resp.status_code == 503
        assert resp.json()["error"]["message"] == "backend down"
        assert resp.headers["x-fixture"] == "down"
    assert len(backend.requests) == 6

    backend.down = False
    assert (await http.get("/models")).status_code == 200


# -- streaming --------------------------------------------------------------------------


async def test_chat_streaming_sdk(backend: FixtureBackend, client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="fixture-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fixture": {"events": 5}},
    )
    contents: list[str] = []
    finish_reasons: list[str] = []
    usages = []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        assert chunk.model == "fixture-model"
        for choice in chunk.choices:
            if choice.delta.content:
                contents.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            assert chunk.choices == []
            usages.append(chunk.usage)
    assert contents == [f"tok{i}" for i in range(5)]
    assert finish_reasons == ["stop"]
    assert len(usages) == 1
    assert (usages[0].prompt_tokens, usages[0].completion_tokens) == (3, 5)
    assert usages[0].total_tokens == 8

    rec = backend.requests[0]
    await wait_done(rec)
    assert not rec.disconnected
    assert json.loads(rec.body)["stream"] is True


async def test_stream_wire_format(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/chat/completions", json=chat_body(stream=True)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-fixture"] == "ok"
        text = (await resp.aread()).decode()
    assert text.endswith("data: [DONE]\n\n")
    payloads = sse_data(text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 3 + 2
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:3]] == ["tok0", "tok1", "tok2"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert {c["id"] for c in chunks} == {"chatcmpl-fixture-1"}


async def test_stream_without_usage_chunk(http: httpx.AsyncClient) -> None:
    body = chat_body(stream=True, usage=False)
    resp = await http.post("/chat/completions", json=body)
    payloads = sse_data(resp.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 3 + 1
    assert all(c["choices"] for c in chunks)
    assert "usage" not in chunks[-1]
    bad = await http.post("/chat/completions", json=chat_body(usage="no"))
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "fixture.usage must be a boolean"


async def test_completions_stream_wire_format(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "prompt": "x", "stream": True, "fixture": {"events": 2}}
    resp = await http.post("/completions", json=body)
    payloads = sse_data(resp.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert [c["object"] for c in chunks] == ["text_completion"] * 4
    assert [c["choices"][0]["text"] for c in chunks[:2]] == ["tok0", "tok1"]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["usage"]["completion_tokens"] == 2


async def test_responses_streaming_sdk(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="r1", input="hi", stream=True, extra_body={"fixture": {"events": 4}}
    )
    types: list[str] = []
    deltas: list[str] = []
    final = None
    async for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert deltas == ["tok0", "tok1", "tok2", "tok3"]
    assert final is not None
    assert final.output_text == "tok0tok1tok2tok3"


async def test_paced_stream_events_arrive_separately(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    body = chat_body(stream=True, events=4, interval=0.2)
    arrivals: list[bytes] = []
    async with http.stream("POST", "/chat/completions", json=body) as resp:
        async for raw in resp.aiter_raw():
            arrivals.append(raw)
    token_arrivals = [a for a in arrivals if b'"tok' in a]
    # Each paced event is its own write and arrives in its own read.
    assert len(token_arrivals) == 4
    assert all(a.count(b'"tok') == 1 for a in token_arrivals)
    assert b"".join(arrivals).endswith(b"data: [DONE]\n\n")
    rec = backend.requests[0]
    await wait_done(rec)
    assert not rec.disconnected
    assert rec.finished_at is not None
    # Lower bound only: three pauses of 0.2 s happened between the token events.
    assert rec.finished_at - rec.started_at >= 0.6


# -- disconnects ------------------------------------------------------------------------


async def test_client_disconnect_mid_stream(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    body = chat_body(stream=True, events=100_000, interval=0.05)
    seen = 0
    async with http.stream("POST", "/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 3:
                    break
    rec = backend.requests[0]
    await wait_done(rec)
    assert rec.disconnected
    assert rec.finished_at is not None


async def test_client_disconnect_mid_stream_fast_writer(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    # No pacing: the generator is most likely paused at ``yield`` (flow control)
    # when the client goes away, so it sees GeneratorExit rather than Cancelled.
    body = chat_body(stream=True, events=1_000_000)
    async with http.stream("POST", "/chat/completions", json=body) as resp:
        async for _ in resp.aiter_raw():
            break
    rec = backend.requests[0]
    await wait_done(rec)
    assert rec.disconnected


async def test_hang_until_client_cancels(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post, http, "/chat/completions", chat_body(hang=True))
        rec = await backend.wait_for_request()
        await trio.testing.wait_all_tasks_blocked()  # handler is parked in the hang
        assert not rec.done.is_set()
        nursery.cancel_scope.cancel()
    await wait_done(rec)
    assert rec.disconnected


async def test_hang_stream_with_sdk_then_cancel(
    backend: FixtureBackend, client: openai.AsyncOpenAI
) -> None:
    async def call() -> None:
        await client.chat.completions.create(
            model="fixture-model",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"fixture": {"hang": True}},
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        rec = await backend.wait_for_request()
        nursery.cancel_scope.cancel()
    await wait_done(rec)
    assert rec.disconnected


async def test_delay_then_cancel_before_head(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post, http, "/chat/completions", chat_body(delay=30, stream=True))
        rec = await backend.wait_for_request()
        nursery.cancel_scope.cancel()
    await wait_done(rec)
    assert rec.disconnected
    assert rec.finished_at is not None
    assert rec.finished_at - rec.started_at < 5


async def test_small_delay_completes(backend: FixtureBackend, http: httpx.AsyncClient) -> None:
    resp = await http.post("/chat/completions", json=chat_body(delay=0.2))
    assert resp.status_code == 200
    rec = backend.requests[0]
    assert rec.done.is_set()
    assert not rec.disconnected
    assert rec.finished_at is not None
    assert rec.finished_at - rec.started_at >= 0.2


async def test_hold_stream_waits_for_release_before_its_tail(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    body = chat_body(stream=True, events=2, hold="tail")
    async with http.stream("POST", "/chat/completions", json=body) as resp:
        lines = aiter(resp.aiter_lines())
        data = [line async for line in _take_data(lines, 2)]
        assert ['"tok0"' in data[0], '"tok1"' in data[1]] == [True, True]
        rec = backend.requests[0]
        await trio.testing.wait_all_tasks_blocked()
        assert not rec.done.is_set()  # held before its closing events
        backend.release("tail")
        rest = [line async for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    await wait_done(rec)
    assert not rec.disconnected


async def _take_data(lines: AsyncIterator[str], n: int) -> AsyncIterator[str]:
    while n:
        line = await anext(lines)
        if line.startswith("data: "):
            n -= 1
            yield line


async def test_hold_non_streaming_and_released_names(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    backend.release("early")  # released before the request: it does not wait
    resp = await http.post("/chat/completions", json=chat_body(hold="early"))
    assert resp.status_code == 200

    answers: list[int] = []

    async def held(name: str, **options: Any) -> None:
        answers.append(
            (await http.post("/messages", json=messages_body(hold=name, **options))).status_code
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held, "late")
        nursery.start_soon(functools.partial(held, "late", status=503, stream=False))
        await backend.wait_for_request(3)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []
        backend.release("late")
    assert sorted(answers) == [200, 503]

    resp = await http.post("/chat/completions", json=chat_body(hold=""))
    assert resp.status_code == 400


# -- bookkeeping / lifecycle ------------------------------------------------------------


async def test_wait_for_request_is_event_driven(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    got: list[RecordedRequest] = []

    async def waiter() -> None:
        got.append(await backend.wait_for_request(2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await http.get("/models")
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await http.post("/chat/completions", json=chat_body())
    assert got == [backend.requests[1]]
    assert got[0].path == "/v1/chat/completions"
    assert await backend.wait_for_request(1) is backend.requests[0]
    with pytest.raises(ValueError, match="1-based"):
        await backend.wait_for_request(0)


async def test_ids_follow_request_order(http: httpx.AsyncClient) -> None:
    await http.get("/models")
    resp = await http.post("/chat/completions", json=chat_body())
    assert resp.json()["id"] == "chatcmpl-fixture-2"


async def test_shutdown_does_not_hang_with_open_requests() -> None:
    outcome: list[str] = []

    async def hang(http: httpx.AsyncClient, url: str) -> None:
        try:
            await http.post(url, json=chat_body(hang=True))
        except httpx.TransportError as exc:
            outcome.append(type(exc).__name__)

    with trio.fail_after(5):
        async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
            async with run_backend() as backend:
                nursery.start_soon(hang, http, backend.base_url + "/chat/completions")
                rec = await backend.wait_for_request()
            # Leaving run_backend while the request hangs: shutdown cancels it.
            assert rec.done.is_set()
            assert rec.disconnected
    assert len(outcome) == 1


# -- Anthropic's Messages API -----------------------------------------------------------


def messages_body(*, stream: bool = False, **fixture: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-fixture",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    if fixture:
        body["fixture"] = fixture
    return body


@pytest.fixture
async def claude(backend: FixtureBackend) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=backend.root_url, api_key="x", max_retries=0) as c:
        yield c


async def test_messages_non_streaming_sdk(
    backend: FixtureBackend, claude: anthropic.AsyncAnthropic
) -> None:
    message = await claude.messages.create(
        model="claude-fixture", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-fixture"
    assert message.id == "msg_fixture_1"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "hello from fixture"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 4)

    rec = backend.requests[0]
    assert rec.path == "/v1/messages"
    # The key travels as x-api-key or (newer SDKs) as a bearer token.
    assert "x" in (rec.headers.get("x-api-key"), rec.headers.get("authorization", "")[7:])
    assert "anthropic-version" in rec.headers
    assert rec.json()["max_tokens"] == 64
    await wait_done(rec)
    assert not rec.disconnected


async def test_messages_streaming_sdk(
    backend: FixtureBackend, claude: anthropic.AsyncAnthropic
) -> None:
    stream = await claude.messages.create(
        model="claude-fixture",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body={"fixture": {"events": 4}},
    )
    types: list[str] = []
    deltas: list[str] = []
    async for event in stream:
        types.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            deltas.append(event.delta.text)
        if event.type == "message_delta":
            assert event.delta.stop_reason == "end_turn"
            assert event.usage.output_tokens == 4
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert deltas == ["tok0", "tok1", "tok2", "tok3"]
    rec = backend.requests[0]
    await wait_done(rec)
    assert not rec.disconnected


async def test_messages_stream_helper_accumulates(claude: anthropic.AsyncAnthropic) -> None:
    async with claude.messages.stream(
        model="claude-fixture",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"fixture": {"events": 3, "interval": 0.01}},
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == ["tok0", "tok1", "tok2"]
    assert final.content[0].text == "tok0tok1tok2"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


async def test_messages_stream_wire_format(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/messages", json=messages_body(stream=True, events=2)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-fixture"] == "ok"
        text = (await r.aread()).decode()
    blocks = [block for block in text.split("\n\n") if block]
    names = [block.splitlines()[0].removeprefix("event: ") for block in blocks]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(p) for p in sse_data(text)]
    assert [p["type"] for p in payloads] == names
    start = payloads[0]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert payloads[2]["delta"] == {"type": "text_delta", "text": "tok0"}


async def test_messages_options_and_errors(
    backend: FixtureBackend, http: httpx.AsyncClient, claude: anthropic.AsyncAnthropic
) -> None:
    resp = await http.post("/messages", json=messages_body(echo_headers=True, big=10))
    assert resp.json()["fixture_headers"]["content-type"] == "application/json"
    assert resp.json()["padding"] == "x" * 10

    resp = await http.post("/messages", json=messages_body(status=529))
    assert resp.status_code == 529
    assert resp.headers["x-fixture"] == "error"
    assert resp.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "fixture error status 529"},
    }
    resp = await http.post("/messages", json=messages_body(status=429, error_body={"x": 1}))
    assert (resp.status_code, resp.json()) == (429, {"x": 1})

    with pytest.raises(anthropic.InternalServerError) as excinfo:
        await claude.messages.create(
            model="claude-fixture",
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"fixture": {"status": 500}},
        )
    assert excinfo.value.status_code == 500
    assert excinfo.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "fixture error status 500"},
    }

    for bad in [
        {"model": "claude-fixture", "messages": []},
        {"model": "claude-fixture", "max_tokens": 0, "messages": []},
        {"model": "claude-fixture", "max_tokens": 8},
        {"max_tokens": 8, "messages": []},
        messages_body(typo=True),
    ]:
        resp = await http.post("/messages", json=bad)
        assert resp.status_code == 400, bad
        assert resp.headers["x-fixture"] == "bad-request"
        body = resp.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"]

    backend.down = True
    resp = await http.post("/messages", json=messages_body())
    assert resp.status_code == 503
    assert resp.headers["x-fixture"] == "down"
    assert resp.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "backend down"},
    }


async def test_messages_hang_then_client_leaves(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post, http, "/messages", messages_body(stream=True, hang=True))
        rec = await backend.wait_for_request()
        nursery.cancel_scope.cancel()
    await wait_done(rec)
    assert rec.disconnected


async def test_messages_client_disconnect_mid_stream(
    backend: FixtureBackend, http: httpx.AsyncClient
) -> None:
    body = messages_body(stream=True, events=100_000, interval=0.01, delay=0.01)
    async with http.stream("POST", "/messages", json=body) as resp:
        async for line in resp.aiter_lines():
            if line == "event: content_block_delta":
                break
    rec = backend.requests[0]
    await wait_done(rec)
    assert rec.disconnected


# -- reachability (run_backend(gate=True)) ----------------------------------------------


async def assert_refused(url: str) -> None:
    """A fresh connection to ``url``'s port is refused by the kernel (nothing listens)."""
    port = int(url.removeprefix("http://127.0.0.1:").split("/", 1)[0])
    with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        await sock.connect(("127.0.0.1", port))
    async with httpx.AsyncClient() as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.get(url)


async def test_gate_refuses_then_accepts_on_the_same_port() -> None:
    async with run_backend(gate=True) as backend, httpx.AsyncClient() as http:
        url = backend.base_url + "/models"
        assert backend.reachable
        assert (await http.get(url)).status_code == 200

        await backend.refuse_connections()
        assert not backend.reachable
        await assert_refused(url)
        # The kept-alive connection of ``http`` was dropped too: a crashed backend.
        with pytest.raises(httpx.ConnectError):
            await http.get(url)
        await backend.refuse_connections()  # idempotent

        backend.accept_connections()
        assert backend.reachable
        assert (await http.get(url)).status_code == 200
        backend.accept_connections()  # idempotent
        assert (await http.get(url)).json()["data"][0]["id"] == "fixture-model"
    assert [r.path for r in backend.requests] == ["/v1/models"] * 3


async def test_gate_drop_cuts_requests_in_flight() -> None:
    async with run_backend(gate=True) as backend, httpx.AsyncClient(timeout=30) as http:
        outcome: list[str] = []

        async def hang() -> None:
            try:
                await http.post(backend.base_url + "/chat/completions", json=chat_body(hang=True))
            except httpx.TransportError as exc:
                outcome.append(type(exc).__name__)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang)
            rec = await backend.wait_for_request()
            await backend.refuse_connections()
        await wait_done(rec)
        assert rec.disconnected
        assert outcome == ["RemoteProtocolError"]


async def test_gate_without_drop_lets_open_connections_finish() -> None:
    async with run_backend(gate=True) as backend, httpx.AsyncClient(timeout=30) as http:
        body = chat_body(stream=True, events=5, interval=0.05)
        async with http.stream("POST", backend.base_url + "/chat/completions", json=body) as r:
            lines = r.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
            await backend.refuse_connections(drop=False)
            await assert_refused(backend.base_url + "/models")
            rest = [line async for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert not backend.requests[0].disconnected
        backend.accept_connections()
        assert (await http.get(backend.base_url + "/models")).status_code == 200


async def test_reachability_needs_a_gate(backend: FixtureBackend) -> None:
    assert backend.reachable
    with pytest.raises(RuntimeError, match="gate=True"):
        await backend.refuse_connections()
    with pytest.raises(RuntimeError, match="gate=True"):
        backend.accept_connections()
