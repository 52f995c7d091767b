"""The ASR plugin end to end: the openai SDK -> nfrx serve -> nfrx asr -> a transcription fixture.

The multipart upload is streamed through the tunnel; the server reads it only up to ``model``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
import trio

from tests.e2e.harness import Server, run_plugin_agent, run_server
from tests.fixtures.transcription import TranscriptionBackend, run_transcription

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.e2e.harness import NfrxProcess


@pytest.fixture
async def transcriber() -> AsyncIterator[TranscriptionBackend]:
    async with run_transcription(["whisper-1", "whisper-large"]) as backend:
        yield backend


@pytest.fixture
async def asr_agent(
    server: Server, transcriber: TranscriptionBackend
) -> AsyncIterator[NfrxProcess]:
    async with run_plugin_agent(server, "asr", {"ASR_BASE_URL": transcriber.base_url}) as agent:
        yield agent


def _client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.url}/api/asr/v1", api_key=server.api_key, max_retries=0
    )


async def test_openai_sdk_transcribes_through_the_tunnel(
    server: Server, transcriber: TranscriptionBackend, asr_agent: NfrxProcess
) -> None:
    audio = b"RIFF" + bytes(range(256)) * 40
    async with _client(server) as client:
        result = await client.audio.transcriptions.create(
            file=("speech.wav", audio, "audio/wav"), model="whisper-1"
        )
        assert result.text == f"transcribed speech.wav ({len(audio)} bytes) with whisper-1"
        models = await client.models.list()
        assert sorted(m.id for m in models.data) == ["whisper-1", "whisper-large"]
        assert (await client.models.retrieve("whisper-1")).id == "whisper-1"
    async with httpx.AsyncClient(timeout=30) as http:
        translated = await http.post(
            f"{server.url}/api/asr/v1/audio/translations",
            files={"file": ("speech.wav", audio, "audio/wav")},
            data={"model": "whisper-large"},
            headers=server.headers(),
        )
    assert translated.json()["text"].startswith("translated speech.wav")


async def test_model_after_the_file_and_sse_stream(
    server: Server, transcriber: TranscriptionBackend, asr_agent: NfrxProcess
) -> None:
    # httpx puts data fields first; build the body by hand with the file part first, large
    # enough that the server must spool it before it knows the model.
    boundary = "b0undary"
    audio = bytes(range(256)) * 8192  # 2 MiB: beyond the in-memory spool
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + audio
    for name, value in (("model", "whisper-1"), ("stream", "true")):
        body += (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}'
        ).encode()
    body += f"\r\n--{boundary}--\r\n".encode()
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.url}/api/asr/v1/audio/transcriptions",
            content=body,
            headers={
                **server.headers(),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert events[-1] == {
        "type": "transcript.text.done",
        "text": f"transcribed a.wav ({len(audio)} bytes) with whisper-1",
    }
    assert [e["type"] for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"file": ("a.wav", b"x")}, {}, 400, "missing_model"),
        ({"file": ("a.wav", b"x")}, {"model": "nope"}, 404, "model_not_found"),
        (None, {"model": "whisper-1"}, 400, "invalid_content_type"),
    ],
)
async def test_errors_are_openai_json(
    server: Server,
    asr_agent: NfrxProcess,
    files: dict[str, Any] | None,
    data: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{server.url}/api/asr/v1/audio/transcriptions",
            files=files,
            data=data,
            headers=server.headers(),
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def _queue_length(http: httpx.AsyncClient, server: Server) -> int:
    state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
    length: int = state["plugins"]["asr"]["queue"]["length"]
    return length


async def test_busy_agent_queues_then_serves(
    server: Server, transcriber: TranscriptionBackend, asr_agent: NfrxProcess
) -> None:
    results: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(timeout=30) as http:

        async def post(name: str, prompt: str) -> None:
            results[name] = await http.post(
                f"{server.url}/api/asr/v1/audio/transcriptions",
                files={"file": (f"{name}.wav", b"abc")},
                data={"model": "whisper-1", "prompt": prompt},
                headers=server.headers(),
            )

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, "first", "hold:first")
                await transcriber.wait_for_forms(1)
                nursery.start_soon(post, "second", "")
                await server.proc.wait_for_line(r"request \S+ for whisper-1 queued at position 1")
                assert await _queue_length(http, server) == 1
                assert len(transcriber.forms) == 1  # the second waits in the server's queue
                transcriber.release("first")
    assert results["first"].json()["text"].startswith("transcribed first.wav")
    assert results["second"].json()["text"].startswith("transcribed second.wav")


async def test_no_queue_answers_busy_at_once(transcriber: TranscriptionBackend) -> None:
    async with (
        run_server(env={"LLM_QUEUE_SIZE": "0"}) as server,
        run_plugin_agent(server, "asr", {"ASR_BASE_URL": transcriber.base_url}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        url = f"{server.url}/api/asr/v1/audio/transcriptions"
        async with trio.open_nursery() as nursery:
            first = {"file": ("a.wav", b"abc")}
            nursery.start_soon(
                lambda: http.post(
                    url,
                    files=first,
                    data={"model": "whisper-1", "prompt": "hold:x"},
                    headers=server.headers(),
                )
            )
            with trio.fail_after(30):
                await transcriber.wait_for_forms(1)
            busy = await http.post(
                url,
                files={"file": ("b.wav", b"x")},
                data={"model": "whisper-1"},
                headers=server.headers(),
            )
            transcriber.release("x")
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "worker_busy"


async def test_state_lists_the_new_plugins(server: Server, asr_agent: NfrxProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        state = (await http.get(f"{server.url}/api/state", headers=server.headers())).json()
    assert {"llm", "docling", "asr"} <= set(state["server"]["plugins"])
    asr = state["plugins"]["asr"]
    assert [a["name"] for a in asr["agents"]] == ["alpha"]
    assert sorted(m["id"] for m in asr["models"]) == ["whisper-1", "whisper-large"]


async def test_alias_match_renames_the_model_in_the_streamed_form(server: Server) -> None:
    async with (
        run_transcription(["whisper:1b-q4_0"]) as backend,
        run_plugin_agent(server, "asr", {"ASR_BASE_URL": backend.base_url}),
        httpx.AsyncClient(timeout=30) as http,
    ):
        response = await http.post(
            f"{server.url}/api/asr/v1/audio/transcriptions",
            files={"file": ("a.wav", b"abc" * 1000)},
            data={"model": "whisper:1b", "language": "en"},
            headers=server.headers(),
        )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "transcribed a.wav (3000 bytes) with whisper:1b-q4_0"
    assert backend.forms == [{"model": "whisper:1b-q4_0", "language": "en"}]


async def test_a_backend_without_a_models_route_serves_the_configured_models(
    server: Server,
) -> None:
    async with run_transcription(["whisper-1"]) as backend:
        backend.models_route = False
        async with (
            run_plugin_agent(
                server, "asr", {"ASR_BASE_URL": backend.base_url, "ASR_MODELS": "whisper-1"}
            ),
            _client(server) as client,
        ):
            assert [m.id for m in (await client.models.list()).data] == ["whisper-1"]
            result = await client.audio.transcriptions.create(
                file=("a.wav", b"RIFF0000", "audio/wav"), model="whisper-1"
            )
            assert result.text == "transcribed a.wav (8 bytes) with whisper-1"
