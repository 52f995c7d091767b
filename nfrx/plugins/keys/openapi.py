"""The keys plugin's part of the OpenAPI document (:mod:`nfrx.server.openapi`): the admin API."""

from __future__ import annotations

from typing import Any

from nfrx.server.openapi import JSON, Answer, ApiPart, Route, ref

_LIMITS_SCHEMA = {
    "type": "object",
    "description": "Each a positive integer, or null for no limit. Per minute: in windows of "
    "KEY_RATE_WINDOW seconds; per day and month: UTC calendar days and months.",
    "properties": {
        name: {"type": ["integer", "null"], "minimum": 1}
        for name in (
            "requests_per_minute",
            "tokens_per_minute",
            "tokens_per_day",
            "tokens_per_month",
        )
    },
}
_KEY_USAGE = {
    "type": "object",
    "properties": {
        **{
            name: {"type": "integer"}
            for name in (
                "requests",
                "errors",
                "refused",
                "cancelled",
                "input_tokens",
                "output_tokens",
            )
        },
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
KEYS_SCHEMAS: dict[str, dict[str, Any]] = {
    "ClientKeyRequest": {
        "type": "object",
        "description": "A client key's fields (POST: `name` required; PATCH: only what changes).",
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$"},
            "models": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["*"],
                "description": "shell patterns of the model ids the key may use",
            },
            "routes": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["*"],
                "description": "llm, asr, docling, jobs, mcp, mcp:<relay id pattern>, *",
            },
            "limits": _LIMITS_SCHEMA,
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "expires_in": {"type": ["number", "null"], "description": "seconds from now"},
            "enabled": {"type": "boolean"},
        },
    },
    "ClientKey": {
        "type": "object",
        "description": "A client key: never its secret (only a SHA-256 of it is stored).",
        "required": ["id", "name", "prefix", "status", "models", "routes", "limits", "usage"],
        "properties": {
            "id": {"type": "string", "examples": ["key_3f9a0c12ab34"]},
            "name": {"type": "string"},
            "prefix": {"type": "string", "description": "the secret's first characters"},
            "status": {"enum": ["active", "disabled", "expired", "revoked"]},
            "enabled": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
            "models": {"type": "array", "items": {"type": "string"}},
            "routes": {"type": "array", "items": {"type": "string"}},
            "limits": _LIMITS_SCHEMA,
            "usage": _KEY_USAGE,
            "usage_by_model": {
                "type": "array",
                "items": {"allOf": [{"properties": {"model": {"type": "string"}}}, _KEY_USAGE]},
            },
            "windows": {
                "type": "object",
                "description": "counts of the current windows",
                "additionalProperties": {"type": "integer"},
            },
        },
    },
    "ClientKeyCreated": {
        "allOf": [
            ref("ClientKey"),
            {
                "type": "object",
                "required": ["secret"],
                "properties": {
                    "secret": {
                        "type": "string",
                        "description": "`nfrx-` and 43 characters; shown this once",
                    }
                },
            },
        ]
    },
    "ClientKeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": ref("ClientKey")}},
    },
    "AgentSetup": {
        "type": "object",
        "required": ["public_url", "plugins", "client_key", "client_roles"],
        "properties": {
            "public_url": {"type": "string", "description": "PUBLIC_URL, else this request's"},
            "plugins": {"type": "array", "items": {"type": "string"}},
            "client_key": {"type": "string", "description": "CLIENT_KEY (empty: not set)"},
            "client_roles": {"type": "boolean", "description": "CLIENT_HTTP_ROLES is set"},
        },
    },
}


def routes() -> list[Route]:
    def key_answer(description: str, status: int = 200) -> tuple[Answer, ...]:
        schema = "ClientKeyCreated" if status == 201 else "ClientKey"
        return (Answer(status, description, ((JSON, ref(schema)),)),)

    body = ((JSON, ref("ClientKeyRequest")),)
    return [
        Route(
            "get",
            "/api/admin/keys",
            "List the client keys (revoked ones too) with their usage",
            "admin",
            "admin",
            (Answer(200, "The keys.", ((JSON, ref("ClientKeyList")),)),),
            (401, 403),
        ),
        Route(
            "post",
            "/api/admin/keys",
            "Create a client key; its secret is in this answer only",
            "admin",
            "admin",
            key_answer("The key, with its `secret`.", 201),
            (400, 401, 403, 409, 413, 503),
            body=True,
            body_content=body,
        ),
        Route(
            "get",
            "/api/admin/keys/{key}",
            "A client key: its rules, its usage by model and its current windows",
            "admin",
            "admin",
            key_answer("The key."),
            (401, 403, 404),
        ),
        Route(
            "patch",
            "/api/admin/keys/{key}",
            "Change a client key (what the body names)",
            "admin",
            "admin",
            key_answer("The key as changed."),
            (400, 401, 403, 404, 409, 413, 503),
            body=True,
            body_content=body,
        ),
        Route(
            "delete",
            "/api/admin/keys/{key}",
            "Revoke a client key for good (refused at once; its usage stays)",
            "admin",
            "admin",
            key_answer("The revoked key."),
            (401, 403, 404, 503),
        ),
        Route(
            "get",
            "/api/admin/agent-setup",
            "What the dashboard's Connect-an-agent page needs, CLIENT_KEY included",
            "admin",
            "admin",
            (Answer(200, "This server's agent settings.", ((JSON, ref("AgentSetup")),)),),
            (401, 403),
        ),
    ]


def api() -> ApiPart:
    return ApiPart(
        tuple(routes()),
        KEYS_SCHEMAS,
        parameters={"key": "A client key's id, or its name."},
        tags=(("admin", "Client keys and agent setup (API_KEY only)"),),
    )
