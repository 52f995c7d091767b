"""The ASR plugin's part of the OpenAPI document (:mod:`nfrx.server.openapi`)."""

from __future__ import annotations

from typing import Any

from nfrx.server.openapi import (
    MULTIPART,
    RELAY_ANSWER,
    RELAY_ERRORS,
    ApiPart,
    Route,
    connect_route,
    model_routes,
    ref,
)

PREFIXES = (
    ("/api/asr/v1", ""),
    ("/api/asr/id/{agent_id}/v1", " on one agent"),
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "TranscriptionForm": {
        "type": "object",
        "description": "OpenAI's transcription form, streamed to the agent; the gateway reads "
        "only `model` (to route). With `stream=true` the answer is server-sent events.",
        "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
            "model": {"type": "string", "minLength": 1},
            "stream": {"type": "boolean"},
        },
        "additionalProperties": True,
    },
}


def routes() -> list[Route]:
    rows: list[Route] = []
    for prefix, where in PREFIXES:
        rows += model_routes(
            prefix,
            where,
            "asr",
            "List the connected speech-to-text models",
            "speech-to-text model",
        )
        rows += [
            Route(
                "post",
                f"{prefix}{path}",
                summary + where,
                "asr",
                "api_key",
                (RELAY_ANSWER,),
                RELAY_ERRORS,
                body=True,
                body_content=((MULTIPART, ref("TranscriptionForm")),),
            )
            for path, summary in (
                ("/audio/transcriptions", "Transcription (OpenAI)"),
                ("/audio/translations", "Translation to English (OpenAI)"),
            )
        ]
    return rows


def api() -> ApiPart:
    return ApiPart(
        (connect_route("asr"), *routes()),
        SCHEMAS,
        tags=(("asr", "Speech to text (OpenAI-compatible)"),),
    )
