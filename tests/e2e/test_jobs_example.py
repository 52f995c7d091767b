"""The README's jobs example, run exactly as printed: its client and worker (plain httpx, in
threads, as a user would run them) against a real ``nfrx serve`` and the transcription fixture
standing in for the worker's private speech-to-text service."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.harness import Server
from tests.fixtures.transcription import run_transcription

pytestmark = pytest.mark.e2e

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> dict[str, Any]:
    """The functions the README's jobs example defines."""
    match = re.search(r"<!-- jobs example:[^>]*-->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "the README lost its jobs example block"
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md (jobs example)", "exec"), namespace)
    return namespace


async def test_the_readme_client_and_worker_transcribe_a_file(
    server: Server, tmp_path: Path
) -> None:
    example = readme_example()
    audio = tmp_path / "talk.wav"
    audio.write_bytes(b"RIFF" + bytes(range(256)) * 400)
    async with run_transcription() as asr:
        results: dict[str, Any] = {}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:

                async def run(name: str, call: functools.partial[Any]) -> None:
                    results[name] = await trio.to_thread.run_sync(call)

                worker = functools.partial(
                    example["work"], server.url, server.client_key, asr.base_url
                )
                client = functools.partial(
                    example["transcribe"], server.url, str(audio), server.api_key
                )
                nursery.start_soon(run, "worker", worker)
                nursery.start_soon(run, "client", client)
    assert results["worker"] is True
    size = audio.stat().st_size
    assert results["client"] == f"transcribed {audio} ({size} bytes) with whisper-1"
    (form,) = asr.forms
    assert form["model"] == "whisper-1"
