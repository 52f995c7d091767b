"""Embeddings with an input array, split across agents by their EMBEDDING_BATCH_SIZE and merged.

The fixture backend's embedding of an input starts with the input's length, so the merged order
is checked against the inputs themselves.
"""

from __future__ import annotations

import httpx
import openai
import trio

from tests.e2e.harness import Server, run_agent
from tests.fixtures.backend import FixtureBackend, run_backend

INPUTS = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "ggggggg"]


def batches(backend: FixtureBackend) -> list[list[str]]:
    return [r.json()["input"] for r in backend.requests if r.path == "/v1/embeddings"]


async def test_inputs_are_split_across_agents_and_merged_in_order(server: Server) -> None:
    async with (
        run_backend() as small,
        run_backend() as large,
        run_agent(server, small.base_url, name="small", env={"EMBEDDING_BATCH_SIZE": "2"}),
        run_agent(server, large.base_url, name="large", env={"EMBEDDING_BATCH_SIZE": "3"}),
        openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as client,
    ):
        result = await client.embeddings.create(model="fixture-model", input=INPUTS)
        assert [e.index for e in result.data] == list(range(len(INPUTS)))
        assert [e.embedding[0] for e in result.data] == [float(len(s)) for s in INPUTS]
        sent = batches(small) + batches(large)
        # Every input went exactly once, in batches no larger than the agent asked for.
        assert sorted(s for batch in sent for s in batch) == INPUTS
        assert batches(small)
        assert all(len(b) <= 2 for b in batches(small))
        assert batches(large)
        assert all(len(b) <= 3 for b in batches(large))
        # The fixture counts one token per input: the sum over batches is one per input.
        assert result.usage.prompt_tokens == result.usage.total_tokens == len(INPUTS)


async def test_one_agent_with_a_batch_limit_gets_sequential_batches(server: Server) -> None:
    async with (
        run_backend() as backend,
        run_agent(server, backend.base_url, env={"EMBEDDING_BATCH_SIZE": "2"}),
        openai.AsyncOpenAI(base_url=server.api_base, api_key="ak", max_retries=0) as client,
    ):
        result = await client.embeddings.create(model="fixture-model", input=INPUTS[:5])
        assert batches(backend) == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
        assert [e.index for e in result.data] == [0, 1, 2, 3, 4]
        assert [e.embedding[0] for e in result.data] == [1.0, 2.0, 3.0, 4.0, 5.0]


async def test_without_a_batch_limit_the_request_passes_through_untouched(
    server: Server, backend: FixtureBackend, agent: object
) -> None:
    body = b'{"model": "fixture-model",   "input": ["x", "yy"], "encoding_format": "float"}'
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.api_base}/embeddings",
            content=body,
            headers={**server.headers(), "Content-Type": "application/json"},
        )
    assert response.status_code == 200
    assert [r.body for r in backend.requests if r.path == "/v1/embeddings"] == [body]


async def test_a_batch_error_fails_the_request_with_the_backend_answer(server: Server) -> None:
    async with (
        run_backend() as backend,
        run_agent(server, backend.base_url, env={"EMBEDDING_BATCH_SIZE": "1"}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        response = await http.post(
            f"{server.api_base}/embeddings",
            json={"model": "fixture-model", "input": ["a", "b"], "fixture": {"status": 422}},
            headers=server.headers(),
        )
        assert response.status_code == 422
        assert response.headers["x-fixture"] == "error"
        assert response.json()["error"]["message"]


async def test_embeddings_for_a_busy_model_wait_in_the_queue(server: Server) -> None:
    async with (
        run_backend() as backend,
        run_agent(server, backend.base_url, env={"EMBEDDING_BATCH_SIZE": "1"}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        results: list[httpx.Response] = []
        scope = trio.CancelScope()

        async def busy() -> None:
            with scope:
                await http.post(
                    f"{server.api_base}/chat/completions",
                    json={
                        "model": "fixture-model",
                        "messages": [{"role": "user", "content": "x"}],
                        "fixture": {"hang": True},
                    },
                    headers=server.headers(),
                )

        async def embed() -> None:
            results.append(
                await http.post(
                    f"{server.api_base}/embeddings",
                    json={"model": "fixture-model", "input": ["a", "bb"]},
                    headers={**server.headers(), "X-Request-Id": "embed"},
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            with trio.fail_after(20):
                while not any(r.path == "/v1/chat/completions" for r in backend.requests):
                    await backend.wait_for_request(len(backend.requests) + 1)
            nursery.start_soon(embed)
            await server.proc.wait_for_line(r"request embed for fixture-model queued")
            scope.cancel()
        assert results[0].status_code == 200, results[0].text
        assert [e["embedding"][0] for e in results[0].json()["data"]] == [1.0, 2.0]
