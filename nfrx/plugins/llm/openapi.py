"""The LLM plugin's part of the OpenAPI document (:mod:`nfrx.server.openapi`)."""

from __future__ import annotations

from nfrx.server.openapi import (
    RELAY_ANSWER,
    RELAY_ERRORS,
    ApiPart,
    Route,
    connect_route,
    model_routes,
)

RELAYED = (
    ("/chat/completions", "Chat completion (OpenAI)"),
    ("/completions", "Text completion (OpenAI)"),
    ("/responses", "Response (OpenAI Responses API)"),
    ("/embeddings", "Embeddings (OpenAI); an `input` array is split across agents"),
)
PREFIXES = (
    ("/api/llm/v1", ""),
    ("/api/llm/id/{agent_id}/v1", " on one agent"),
)


def routes() -> list[Route]:
    rows: list[Route] = []
    for prefix, where in PREFIXES:
        rows += model_routes(prefix, where, "llm", "List the connected agents' models", "model")
        rows += [
            Route(
                "post",
                f"{prefix}{path}",
                summary + where,
                "llm",
                "api_key",
                (RELAY_ANSWER,),
                RELAY_ERRORS,
                body=True,
            )
            for path, summary in RELAYED
        ]
        rows.append(
            Route(
                "post",
                f"{prefix}/messages",
                f"Message (Anthropic-compatible){where}",
                "llm",
                "api_key_or_x_api_key",
                (RELAY_ANSWER,),
                RELAY_ERRORS,
                error_style="anthropic",
                body=True,
                description="For backends that speak Anthropic's API (llama.cpp). Errors are "
                "in Anthropic's shape.",
            )
        )
    return rows


def api() -> ApiPart:
    connect = connect_route(
        "llm",
        "A WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`) authenticated with the "
        "client key (CLIENT_KEY), never the API key. Not callable from this page.",
    )
    return ApiPart(
        (connect, *routes()),
        tags=(("llm", "OpenAI- and Anthropic-compatible routes"),),
    )
