"""The README's SDK examples, as a user would run them, against a stream that has to wait.

The agent has one slot (``MAX_CONCURRENCY=1``, the default) and a paced request holds it, so the
example's request queues: its answer starts with ``nfrx.queue`` updates (the default form, SSE
comments), then the generation once the holder is released. Each example prints what it
receives, as in the README (into a buffer here), and must print exactly the generated text: the
updates are invisible to the official SDKs, sync and async, chat completions, responses and
Anthropic's messages. (With named ``event: nfrx.queue`` events instead, the chat examples raise
``TypeError``: the openai SDK makes each event a chunk, this one without ``choices``.)
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import attrs
import httpx
import openai
import trio

from tests.e2e.harness import Server, run_agent, run_server
from tests.fixtures.backend import FixtureBackend, run_backend

HANG_GUARD = 60
MODEL = "fixture-model"
MESSAGES: Any = [{"role": "user", "content": "Hello"}]
PACED = {"events": 4, "interval": 0.01}
"""The example's own answer: four paced tokens (tok0..tok3)."""
TEXT = "tok0tok1tok2tok3"


@attrs.define
class OneSlotTaken:
    server: Server
    backend: FixtureBackend


@asynccontextmanager
async def one_slot_taken() -> AsyncIterator[OneSlotTaken]:
    """A server, a capacity-1 agent, and a stream holding its slot until the block's
    :func:`queued` releases it."""
    async with (
        run_server(env={"LLM_QUEUE_UPDATE_SECONDS": "0.05"}) as server,
        run_backend() as backend,
        run_agent(server, backend.base_url),
        httpx.AsyncClient(timeout=HANG_GUARD) as http,
        trio.open_nursery() as nursery,
    ):

        async def hold() -> None:
            body = {"model": MODEL, "messages": MESSAGES, "stream": True}
            body["fixture"] = {"hold": "slot", "interval": 0.01}
            async with http.stream(
                "POST", f"{server.api_base}/chat/completions", json=body, headers=server.headers()
            ) as response:
                assert response.status_code == 200
                async for _ in response.aiter_bytes():
                    pass

        nursery.start_soon(hold)
        await backend.wait_for_request(1)
        yield OneSlotTaken(server, backend)
        backend.release("slot")


async def queued(gateway: OneSlotTaken, example: Callable[[io.StringIO], Awaitable[None]]) -> str:
    """Run ``example`` while it waits in the queue, release the slot, return what it printed."""
    out = io.StringIO()
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(example, out)
            await gateway.server.proc.wait_for_line(rf"request \S+ for {MODEL} queued at position")
            gateway.backend.release("slot")
    return out.getvalue()


def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_base, api_key=server.api_key, max_retries=0)


async def test_sync_chat_stream() -> None:
    async with one_slot_taken() as gateway:

        def example(out: io.StringIO) -> None:
            client = openai_client(gateway.server)
            for chunk in client.chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                extra_body={"fixture": {**PACED, "usage": False}},
            ):
                print(chunk.choices[0].delta.content or "", end="", flush=True, file=out)
            client.close()

        async def in_thread(out: io.StringIO) -> None:
            await trio.to_thread.run_sync(example, out)

        assert await queued(gateway, in_thread) == TEXT


async def test_async_chat_stream() -> None:
    async with one_slot_taken() as gateway:

        async def example(out: io.StringIO) -> None:
            server = gateway.server
            async with openai.AsyncOpenAI(
                base_url=server.api_base, api_key=server.api_key, max_retries=0
            ) as client:
                stream = await client.chat.completions.create(
                    model=MODEL,
                    messages=MESSAGES,
                    stream=True,
                    extra_body={"fixture": {**PACED, "usage": False}},
                )
                async for chunk in stream:
                    print(chunk.choices[0].delta.content or "", end="", flush=True, file=out)

        assert await queued(gateway, example) == TEXT


async def test_sync_responses_stream() -> None:
    async with one_slot_taken() as gateway:

        def example(out: io.StringIO) -> None:
            client = openai_client(gateway.server)
            stream = client.responses.create(
                model=MODEL, input="Hello", stream=True, extra_body={"fixture": PACED}
            )
            for event in stream:
                if event.type == "response.output_text.delta":
                    print(event.delta, end="", flush=True, file=out)
            client.close()

        async def in_thread(out: io.StringIO) -> None:
            await trio.to_thread.run_sync(example, out)

        assert await queued(gateway, in_thread) == TEXT


async def test_async_responses_stream() -> None:
    async with one_slot_taken() as gateway:

        async def example(out: io.StringIO) -> None:
            server = gateway.server
            async with openai.AsyncOpenAI(
                base_url=server.api_base, api_key=server.api_key, max_retries=0
            ) as client:
                stream = await client.responses.create(
                    model=MODEL, input="Hello", stream=True, extra_body={"fixture": PACED}
                )
                async for event in stream:
                    if event.type == "response.output_text.delta":
                        print(event.delta, end="", flush=True, file=out)

        assert await queued(gateway, example) == TEXT


async def test_anthropic_messages_stream() -> None:
    async with one_slot_taken() as gateway:

        def example(out: io.StringIO) -> None:
            server = gateway.server
            claude = anthropic.Anthropic(
                base_url=f"{server.url}/api/llm", api_key=server.api_key, max_retries=0
            )
            with claude.messages.stream(
                model=MODEL, max_tokens=256, messages=MESSAGES, extra_body={"fixture": PACED}
            ) as stream:
                for text in stream.text_stream:
                    print(text, end="", flush=True, file=out)
            claude.close()

        async def in_thread(out: io.StringIO) -> None:
            await trio.to_thread.run_sync(example, out)

        assert await queued(gateway, in_thread) == TEXT
