"""Embeddings split across agents (:func:`nfrx.plugins.llm.embeddings.run_split`), in process:
scripted agents on in-memory tunnels whose embedding of an input is ``[len(input)]``, so the
merged order is checked against the inputs themselves."""

from __future__ import annotations

import functools
import json

import pytest
import trio

from nfrx.plugins.llm.embeddings import batch_size, splittable
from nfrx.protocol import ResetCode
from nfrx.transport.streams import IncomingStream
from tests.server.app_harness import JSON_HEAD, Seen, answer, serve_app

INPUTS = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg"]
ROUTE = "/api/llm/v1/embeddings"


async def embed(stream: IncomingStream, seen: Seen) -> None:
    """A backend's answer for the batch the agent got: one embedding per input, listed in
    reverse (the server orders them by ``index``), one token per input."""
    inputs = seen.json()["input"]
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(text))]}
        for i, text in enumerate(inputs)
    ]
    body = {
        "object": "list",
        "data": data[::-1],
        "model": "m1",
        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
    }
    await stream.send_response(200, JSON_HEAD, data=json.dumps(body).encode(), end=True)


def batches(seen: list[Seen], agent: str) -> list[list[str]]:
    return [s.json()["input"] for s in seen if s.agent == agent]


async def test_inputs_are_split_across_agents_and_merged_in_order() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "small", embed, models=("m1",), embedding_batch_size=2)
        await app.agent("llm", "large", embed, models=("m1",), embedding_batch_size=3)
        response = await client.post(ROUTE, json={"model": "m1", "input": INPUTS})
    assert response.status_code == 200
    result = response.json()
    assert [e["index"] for e in result["data"]] == list(range(len(INPUTS)))
    assert [e["embedding"][0] for e in result["data"]] == [float(len(s)) for s in INPUTS]
    assert result["usage"] == {"prompt_tokens": len(INPUTS), "total_tokens": len(INPUTS)}
    small, large = batches(app.seen, "small"), batches(app.seen, "large")
    assert sorted(text for batch in small + large for text in batch) == INPUTS
    assert small
    assert all(len(batch) <= 2 for batch in small)
    assert large
    assert all(len(batch) <= 3 for batch in large)
    assert all(seen.json()["model"] == "m1" for seen in app.seen)


async def test_one_agent_with_a_batch_limit_gets_sequential_batches() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", embed, models=("m1",), embedding_batch_size=2)
        response = await client.post(ROUTE, json={"model": "m1", "input": INPUTS[:5]})
    assert response.status_code == 200
    assert batches(app.seen, "a1") == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    assert [e["embedding"][0] for e in response.json()["data"]] == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_without_a_batch_limit_the_request_and_answer_pass_through() -> None:
    body = b'{"model": "m1",   "input": ["x", "yy"], "encoding_format": "float"}'
    untouched = b'{"data": "as the backend wrote it"}'
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, untouched), models=("m1",))
        response = await client.post(
            ROUTE, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200
    assert response.content == untouched
    assert [seen.body for seen in app.seen] == [body]


async def test_a_batch_error_fails_the_request_with_the_backend_answer() -> None:
    error = {"error": {"message": "input too long", "type": "invalid_request_error"}}
    headers = (*JSON_HEAD, ("x-backend", "error"))
    async with serve_app() as app, app.client() as client:
        await app.agent(
            "llm", "a1", answer(422, error, headers), models=("m1",), embedding_batch_size=1
        )
        response = await client.post(ROUTE, json={"model": "m1", "input": ["a", "b"]})
    assert response.status_code == 422
    assert response.json() == error
    assert response.headers["x-backend"] == "error"
    assert response.headers["x-request-id"]


async def test_an_agent_that_fails_mid_answer_hands_its_batch_to_another() -> None:
    failed = trio.Event()

    async def broken(stream: IncomingStream, seen: Seen) -> None:
        await stream.send_response(200, JSON_HEAD, data=b'{"data": [')
        stream.reset(ResetCode.UPSTREAM_ERROR, "the backend died")
        failed.set()

    async def good(stream: IncomingStream, seen: Seen) -> None:
        await failed.wait()  # still busy when the other agent fails: it takes the batch back
        await embed(stream, seen)

    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "broken", broken, models=("m1",), embedding_batch_size=2)
        await app.agent("llm", "good", good, models=("m1",), embedding_batch_size=2)
        response = await client.post(ROUTE, json={"model": "m1", "input": INPUTS[:4]})
        assert response.status_code == 200
        assert [e["embedding"][0] for e in response.json()["data"]] == [1.0, 2.0, 3.0, 4.0]
        [lost] = batches(app.seen, "broken")
        assert lost in batches(app.seen, "good")
        record = app.gateway.registry.get("llm", "broken")
        assert record is not None
        assert record.failures_total == 1


async def test_an_unusable_answer_is_a_502() -> None:
    wrong = {"object": "list", "data": [{"index": 0, "embedding": [1.0]}]}  # one for two
    async with serve_app() as app, app.client() as client:
        await app.agent("llm", "a1", answer(200, wrong), models=("m1",), embedding_batch_size=2)
        await app.agent("llm", "a2", answer(200, wrong), models=("m1",), embedding_batch_size=2)
        response = await client.post(ROUTE, json={"model": "m1", "input": INPUTS[:4]})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_error"
    assert error["message"] == (
        "the backend's embeddings answer is unusable: 1 embeddings for 2 inputs"
    )


async def test_a_client_that_leaves_cancels_every_batch() -> None:
    started = trio.Semaphore(0)

    async def slow(stream: IncomingStream, seen: Seen) -> None:
        started.release()
        await trio.sleep_forever()

    async with serve_app() as app:
        a1 = await app.agent("llm", "a1", slow, models=("m1",), embedding_batch_size=1)
        a2 = await app.agent("llm", "a2", slow, models=("m1",), embedding_batch_size=1)
        async with app.client() as client, trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(client.post, ROUTE, json={"model": "m1", "input": ["a", "b"]})
            )
            await started.acquire()
            await started.acquire()
            nursery.cancel_scope.cancel()
        # Both slots come back, counted as cancelled by the client, not as failures.
        while a1.inflight or a2.inflight:
            await app.gateway.registry.wait_changed()
    assert (a1.cancelled_total, a2.cancelled_total) == (1, 1)
    assert (a1.failures_total, a2.failures_total) == (0, 0)


@pytest.mark.parametrize(
    ("payload", "inputs"),
    [
        ({"input": ["a", "b"]}, ["a", "b"]),
        ({"input": ["a"]}, None),
        ({"input": "a"}, None),
        ({}, None),
    ],
)
def test_only_two_inputs_or_more_are_split(payload: dict[str, object], inputs: object) -> None:
    assert splittable(payload) == inputs


@pytest.mark.parametrize(("limit", "share", "size"), [(0, 4, 4), (2, 4, 2), (8, 4, 4)])
def test_a_batch_is_the_agent_limit_at_most_and_a_fair_share(
    limit: int, share: int, size: int
) -> None:
    assert batch_size(limit, share) == size
