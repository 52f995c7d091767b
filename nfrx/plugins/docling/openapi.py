"""The Docling plugin's part of the OpenAPI document (:mod:`nfrx.server.openapi`)."""

from __future__ import annotations

from typing import Any

from nfrx.server.openapi import (
    JSON,
    MULTIPART,
    RELAY_ERRORS,
    Answer,
    ApiPart,
    Route,
    connect_route,
    ref,
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "DoclingRequest": {
        "type": "object",
        "description": "docling-serve's request, streamed to the agent unread.",
        "additionalProperties": True,
    },
}


def routes() -> list[Route]:
    converted = Answer(200, "docling-serve's answer, passed through.", ((JSON, ref("Relayed")),))
    rows = [
        Route(
            "post",
            f"/api/docling/v1{path}",
            summary,
            "docling",
            "api_key",
            (converted,),
            RELAY_ERRORS,
            body=True,
            body_content=((media, ref("DoclingRequest")),),
        )
        for path, summary, media in (
            ("/convert/source", "Convert documents from URLs or base64 sources", JSON),
            ("/convert/file", "Convert uploaded files", MULTIPART),
            ("/convert/source/async", "Start converting sources; answers a task id", JSON),
            (
                "/convert/file/async",
                "Start converting uploaded files; answers a task id",
                MULTIPART,
            ),
        )
    ]
    rows += [
        Route(
            "get",
            f"/api/docling/v1{path}",
            summary,
            "docling",
            "api_key",
            (converted,),
            (401, 404, 502, 503, 504),
        )
        for path, summary in (
            ("/status/poll/{task_id}", "Status of an async task (on the agent that issued it)"),
            ("/result/{task_id}", "Result of an async task (on the agent that issued it)"),
        )
    ]
    return rows


def api() -> ApiPart:
    return ApiPart(
        (connect_route("docling"), *routes()),
        SCHEMAS,
        parameters={
            "task_id": "The id an async docling conversion answered; served by the agent that "
            "issued it.",
        },
        tags=(("docling", "Document conversion (docling-serve)"),),
    )
