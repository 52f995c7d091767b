"""The MCP relay's part of the OpenAPI document (:mod:`nfrx.server.openapi`)."""

from __future__ import annotations

from typing import Any

from nfrx.server.openapi import JSON, SSE, Answer, ApiPart, Route, connect_route, ref

SCHEMAS: dict[str, dict[str, Any]] = {
    "JsonRpcMessage": {
        "type": "object",
        "description": "One JSON-RPC 2.0 message (request, notification or response), relayed "
        "byte for byte; the relay reads only `id`, `method` and progress/cancel fields.",
        "required": ["jsonrpc"],
        "properties": {"jsonrpc": {"const": "2.0"}},
        "additionalProperties": True,
    },
}

ERROR_MEANINGS = {
    400: "The body is not one JSON-RPC message (-32700 / -32600).",
    401: "Missing or wrong key (API_KEY or the relay's AUTH_TOKEN); `WWW-Authenticate` says so.",
    403: "The Origin or Host is not allowed.",
    404: "Unknown relay, or an unknown or expired session (initialize again).",
    413: "The message is larger than BROKER_MAX_REQ_BYTES.",
    415: "The body is not sent as application/json.",
    429: "The relay's request or stream cap is reached; see Retry-After.",
    503: "The relay is offline, its provider unreachable, its session table full, or the "
    "server draining; see Retry-After.",
}

ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)
PATHS = ("/api/mcp/id/{relay_id}", "/api/mcp/id/{relay_id}/")


def routes() -> list[Route]:
    rows: list[Route] = []
    answered = Answer(
        200,
        "The provider's answer: one JSON-RPC message, or server-sent events relayed as they "
        "arrive; a relay failure after dispatch is a JSON-RPC error (`data.nfrx.code`) as the "
        "body or as the final event.",
        ((JSON, ref("JsonRpcMessage")), (SSE, ref("EventStream"))),
    )
    for path in PATHS:
        where = " (trailing slash; never redirected)" if path.endswith("/") else ""
        rows += [
            Route(
                "post",
                path,
                f"Send one MCP message (Streamable HTTP, both eras){where}",
                "mcp",
                "api_key_or_relay_token",
                (answered, Answer(202, "A notification or response was accepted.")),
                ERRORS,
                error_style="jsonrpc",
                body=True,
                body_content=((JSON, ref("JsonRpcMessage")),),
                description="Requests answer JSON or SSE as the provider chooses; the relay "
                "cancels a request after MCP_CALL_TIMEOUT without provider activity.",
            ),
            Route(
                "get",
                path,
                f"Open the session's server-to-client event stream{where}",
                "mcp",
                "api_key_or_relay_token",
                (Answer(200, "Server-sent events.", ((SSE, ref("EventStream")),)),),
                ERRORS,
                error_style="jsonrpc",
            ),
            Route(
                "delete",
                path,
                f"End an MCP session{where}",
                "mcp",
                "api_key_or_relay_token",
                (Answer(200, "The provider's answer (it may also be 405)."),),
                ERRORS,
                error_style="jsonrpc",
            ),
        ]
    rows.append(
        Route(
            "get",
            "/.well-known/oauth-protected-resource/api/mcp/id/{relay_id}",
            "Protected-resource metadata of a pass-through MCP relay",
            "mcp",
            "none",
            (Answer(200, "The provider's metadata (RFC 9728).", ((JSON, {"type": "object"}),)),),
            (404,),
            error_style="jsonrpc",
            description="Only for relays started with MCP_AUTH_PASSTHROUGH (the provider does "
            "its own OAuth); fetched from the provider through the tunnel.",
        )
    )
    return rows


def api() -> ApiPart:
    return ApiPart(
        (connect_route("mcp"), *routes()),
        SCHEMAS,
        parameters={
            "relay_id": "The MCP relay's CLIENT_ID (the `nfrx mcp` agent serving one provider).",
        },
        tags=(("mcp", "MCP relays (Streamable HTTP, both protocol eras)"),),
        error_meanings={"jsonrpc": ERROR_MEANINGS},
    )
