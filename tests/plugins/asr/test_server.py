"""The ASR plugin's server side in process (:mod:`nfrx.plugins.asr.server`): multipart uploads
routed on their ``model`` field and streamed to scripted agents on in-memory tunnels."""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any

import httpx
import pytest

from nfrx.server.upload import FieldFinder
from tests.server.app_harness import answer, serve_app

API = "/api/asr/v1"
TRANSCRIPT = {"text": "hello"}


def form_fields(body: bytes, content_type: str) -> dict[str, bytes]:
    """The fields of a multipart body, by name (as a backend would read them)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = part.get_payload(decode=True)
    return fields


async def test_a_transcription_is_routed_on_its_model_field_and_relayed_whole() -> None:
    audio = bytes(range(256)) * 64
    async with serve_app() as app, app.client() as client:
        await app.agent("asr", "other", answer(200, TRANSCRIPT), models=("whisper-large",))
        await app.agent("asr", "tiny", answer(200, TRANSCRIPT), models=("whisper-1",))
        response = await client.post(
            f"{API}/audio/transcriptions",
            files={"file": ("a.wav", audio)},
            data={"language": "en", "model": "whisper-1"},  # the model after another field
        )
    assert response.status_code == 200
    assert response.json() == TRANSCRIPT
    [seen] = app.seen
    assert (seen.agent, seen.path) == ("tiny", "/audio/transcriptions")
    fields = form_fields(seen.body, seen.headers["content-type"])
    assert fields == {"file": audio, "language": b"en", "model": b"whisper-1"}


async def test_an_alias_is_renamed_in_the_streamed_form() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("asr", "a1", answer(200, TRANSCRIPT), models=("whisper:1b-q4_0",))
        response = await client.post(
            f"{API}/audio/translations",
            files={"file": ("a.wav", b"abc" * 1000)},
            data={"model": "whisper:1b"},
        )
    assert response.status_code == 200
    fields = form_fields(app.seen[0].body, app.seen[0].headers["content-type"])
    assert fields["model"] == b"whisper:1b-q4_0"
    assert fields["file"] == b"abc" * 1000


@pytest.mark.parametrize(
    ("request_args", "status", "code", "message"),
    [
        (
            {"files": {"file": ("a.wav", b"x")}},
            400,
            "missing_model",
            "the form needs a 'model' field (non-empty)",
        ),
        (
            {"files": {"file": ("a.wav", b"x")}, "data": {"model": "nope"}},
            404,
            "model_not_found",
            "the model 'nope' does not exist: no connected agent serves it",
        ),
        (
            {"data": {"model": "whisper-1"}},
            400,
            "invalid_content_type",
            "the request body must be multipart/form-data",
        ),
        (
            {
                "content": b"--b\r\n" + b"x" * (FieldFinder.MAX_HEADERS + 1),
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            400,
            "invalid_body",
            "malformed multipart body: multipart part headers are too long",
        ),
    ],
)
async def test_a_form_that_cannot_be_routed_is_refused(
    request_args: dict[str, Any], status: int, code: str, message: str
) -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("asr", "a1", answer(200, TRANSCRIPT), models=("whisper-1",))
        response = await client.post(f"{API}/audio/transcriptions", **request_args)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].startswith(message)
    assert app.seen == []


async def test_a_targeted_route_refuses_an_unknown_agent_at_once() -> None:
    async with serve_app() as app, app.client() as client:
        await app.agent("asr", "a1", answer(200, TRANSCRIPT), models=("whisper-1",))
        response = await client.post(
            "/api/asr/id/zz/v1/audio/transcriptions",
            files={"file": ("a.wav", b"x")},
            data={"model": "whisper-1"},
        )
        models = await client.get(f"{API}/models")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"
    assert [model["id"] for model in models.json()["data"]] == ["whisper-1"]


async def test_without_the_api_key_nothing_is_relayed() -> None:
    async with serve_app() as app, httpx.AsyncClient(base_url=app.url) as client:
        await app.agent("asr", "a1", answer(200, TRANSCRIPT), models=("whisper-1",))
        response = await client.post(
            f"{API}/audio/transcriptions",
            files={"file": ("a.wav", b"x")},
            data={"model": "whisper-1"},
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert app.seen == []
