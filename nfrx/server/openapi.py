"""The server's own API description: an OpenAPI 3.1 document and Swagger UI, under ``/api/client/``.

The document is generated from :data:`ROUTES`, one row per public route (path, method, summary,
who may call it, what it answers); the schemas it refers to are in :data:`SCHEMAS`. Nothing is
written as JSON by hand, and ``tests/e2e/test_openapi.py`` checks that the table and the app's
URL map name the same routes.

Swagger UI's static files come from the ``swagger-ui-py`` package (Swagger UI 5, which renders
OpenAPI 3.1; Apache-2.0) and are served from here, so the page works offline: no CDN. Its
package is only located on disk, never imported. The page, the document and the assets need no
key: they describe the API, they do not call it (the page's "Try it out" sends the key the user
types in).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Literal

import attrs
import trio
from quart import Blueprint, Response

from nfrx._version import __version__
from nfrx.plugins.jobs.model import STATUSES as JOB_STATUSES
from nfrx.server.http_errors import HttpError

Auth = Literal[
    "none",
    "api_key",
    "api_key_or_x_api_key",
    "api_key_or_relay_token",
    "client_key",
    "api_key_or_client_key",
    "admin",
]
ErrorStyle = Literal["openai", "anthropic", "jsonrpc", "plain"]

PREFIX = "/api/client"


@attrs.frozen
class Answer:
    """A successful answer: its status, what it means, and its body per media type."""

    status: int
    description: str
    content: tuple[tuple[str, dict[str, Any]], ...] = ()


@attrs.frozen
class Route:
    """One public route as the document describes it (``{name}`` for path parameters)."""

    method: Literal["get", "post", "patch", "delete"]
    path: str
    summary: str
    tag: str
    auth: Auth
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()
    error_style: ErrorStyle = "openai"
    body: bool = False
    description: str = ""
    body_content: tuple[tuple[str, dict[str, Any]], ...] = ()
    """The request body's media types when it is not the JSON :data:`SCHEMAS` RequestBody."""


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


JSON = "application/json"
SSE = "text/event-stream"
HTML = "text/html"

# -- jobs and transfer (nfrx.plugins.jobs, nfrx.plugins.transfer) --------------------------------

JOBS_SCHEMAS: dict[str, dict[str, Any]] = {
    "PlainError": {
        "type": "object",
        "description": "The original nfrx's error (jobs and transfer routes), with a message.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "examples": ["not_found"]},
            "message": {"type": "string", "description": "for people"},
        },
    },
    "JobCreate": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "minLength": 1, "examples": ["asr.transcribe"]},
            "metadata": {"type": "object", "description": "opaque to nfrx"},
            "worker_id": {"type": "string", "description": "only this worker may claim it"},
            "worker_group": {"type": "string", "description": "only this group may claim it"},
            "priority": {"type": "integer", "description": "higher first; FIFO within one"},
        },
    },
    "JobCreated": {
        "type": "object",
        "required": ["job_id", "status"],
        "properties": {"job_id": {"type": "string"}, "status": {"const": "queued"}},
    },
    "Job": {
        "type": "object",
        "description": "A job as its client sees it (empty fields are left out).",
        "required": ["id", "type", "status", "created_at", "updated_at"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "status": {"enum": list(JOB_STATUSES)},
            "priority": {"type": "integer"},
            "metadata": {"type": "object"},
            "worker_id": {"type": "string"},
            "worker_group": {"type": "string"},
            "claimed_worker_id": {"type": "string"},
            "claimed_worker_group": {"type": "string"},
            "progress": {"type": "object"},
            "error": {"$ref": "#/components/schemas/JobError"},
            "payloads": {"type": "object", "additionalProperties": _ref("TransferInfo")},
            "results": {"type": "object", "additionalProperties": _ref("TransferInfo")},
            "queue_position": {"type": "integer", "description": "1-based, while queued"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "JobError": {
        "type": "object",
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "TransferInfo": {
        "type": "object",
        "description": "A channel offered on a job: the client POSTs a payload, GETs a result.",
        "required": ["channel_id", "method", "url", "expires_at"],
        "properties": {
            "channel_id": {"type": "string"},
            "method": {"enum": ["POST", "GET"]},
            "url": {"type": "string"},
            "expires_at": {"type": "string", "format": "date-time"},
            "key": {"type": "string"},
            "properties": {"type": "object"},
        },
    },
    "ClaimRequest": {
        "type": "object",
        "properties": {
            "types": {"type": "array", "items": {"type": "string"}},
            "max_wait_seconds": {"type": "number", "minimum": 0},
            "worker_id": {"type": "string"},
            "worker_group": {"type": "string"},
        },
    },
    "Claim": {
        "type": "object",
        "description": "A claimed job. Send `lease_token` back (X-Nfrx-Lease) on every post.",
        "required": ["job_id", "type", "lease_token", "lease_expires_at"],
        "properties": {
            "job_id": {"type": "string"},
            "type": {"type": "string"},
            "metadata": {"type": ["object", "null"]},
            "worker_id": {"type": "string"},
            "worker_group": {"type": "string"},
            "claimed_worker_id": {"type": "string"},
            "claimed_worker_group": {"type": "string"},
            "lease_token": {"type": "string"},
            "lease_expires_at": {"type": "string", "format": "date-time"},
            "lease_seconds": {"type": "number"},
        },
    },
    "TransferRequest": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "properties": {"type": "object", "description": "opaque to nfrx"},
            "lease_token": {"type": "string"},
        },
    },
    "TransferOffer": {
        "type": "object",
        "description": "The worker's side of a job's channel: it GETs `reader_url` (payload) or "
        "POSTs to `writer_url` (result).",
        "required": ["key", "channel_id", "expires_at"],
        "properties": {
            "key": {"type": "string"},
            "channel_id": {"type": "string"},
            "reader_url": {"type": "string"},
            "writer_url": {"type": "string"},
            "expires_at": {"type": "string", "format": "date-time"},
            "properties": {"type": "object"},
        },
    },
    "StatusUpdate": {
        "type": "object",
        "required": ["state"],
        "properties": {
            "state": {"enum": list(JOB_STATUSES)},
            "progress": {"type": "object"},
            "error": {"$ref": "#/components/schemas/JobError"},
            "lease_token": {"type": "string"},
        },
    },
    "JobStatus": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": list(JOB_STATUSES)},
            "lease_expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "TransferChannel": {
        "type": "object",
        "required": ["channel_id", "expires_at"],
        "properties": {
            "channel_id": {"type": "string"},
            "expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "TransferDone": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}, "bytes": {"type": "integer"}},
    },
}


PLAIN_ERROR_MEANINGS = {
    400: "The body or a field is invalid (`invalid_request`, `missing_type`, `missing_state`, "
    "`unknown_state`).",
    401: "Missing or wrong key (`unauthorized`).",
    403: "The worker does not hold the job's lease (`lease_mismatch`).",
    404: "Unknown job or channel (`not_found`, `transfer_not_found`).",
    409: "Not possible in the job's state (`invalid_state`), or the channel's side is taken "
    "(`transfer_in_use`).",
    410: "The channel expired before both sides attached (`transfer_expired`) or was closed with "
    "its job (`transfer_closed`).",
    413: "The JSON body is larger than 64 KiB.",
    502: "The other side of the transfer left or failed (`transfer_failed`).",
    503: "Too many jobs (`too_many_jobs`) or open channels (`too_many_transfers`).",
}


def _jobs_routes() -> list[Route]:
    def json_answer(schema: str, description: str) -> tuple[Answer, ...]:
        return (Answer(200, description, ((JSON, _ref(schema)),)),)

    def row(
        method: Literal["get", "post"],
        path: str,
        summary: str,
        auth: Auth,
        answers: tuple[Answer, ...],
        errors: tuple[int, ...],
        body: str = "",
        description: str = "",
    ) -> Route:
        return Route(
            method,
            f"/api/jobs{path}",
            summary,
            "jobs",
            auth,
            answers,
            errors,
            error_style="plain",
            body=bool(body),
            body_content=((JSON, _ref(body)),) if body else (),
            description=description,
        )

    events = (Answer(200, "Server-sent events.", ((SSE, {"type": "string"}),)),)
    lease = "The worker sends the claim's lease token (X-Nfrx-Lease header or `lease_token`)."
    worker_post = (400, 401, 403, 404, 409, 413)
    return [
        row(
            "post",
            "",
            "Create a job",
            "api_key",
            json_answer("JobCreated", "Queued."),
            (400, 401, 413, 503),
            "JobCreate",
        ),
        row(
            "get",
            "/{job_id}",
            "A job, with its queue position",
            "api_key",
            json_answer("Job", "The job."),
            (401, 404),
            description="A poll counts as the client being there (JOBS_CLIENT_TTL).",
        ),
        row(
            "get",
            "/{job_id}/events",
            "A job's events",
            "api_key",
            events,
            (401, 404),
            description="`status` (a Job), `payload` and `result` (a TransferInfo) events; the "
            "stream ends JOBS_SSE_CLOSE_DELAY after the final status.",
        ),
        row(
            "post",
            "/{job_id}/cancel",
            "Cancel a job",
            "api_key",
            json_answer("JobStatus", "The job's status (a finished job is left as it is)."),
            (401, 404),
        ),
        row(
            "post",
            "/claim",
            "Claim a job (long poll)",
            "client_key",
            (
                *json_answer("Claim", "A job, now the caller's."),
                Answer(204, "No job within max_wait_seconds."),
            ),
            (400, 401, 413),
            "ClaimRequest",
        ),
        row(
            "get",
            "/stream",
            "Claim jobs as they come",
            "client_key",
            events,
            (400, 401),
            description="Query: `types` (comma-separated), `worker_id`, `worker_group`, "
            "`max_active`. `job` events carry claims; `cancel` events say a job was taken "
            "away.",
        ),
        row(
            "post",
            "/{job_id}/payload",
            "Open the job's payload channel",
            "client_key",
            json_answer("TransferOffer", "The worker reads `reader_url`."),
            (*worker_post, 503),
            "TransferRequest",
            lease,
        ),
        row(
            "post",
            "/{job_id}/result",
            "Open the job's result channel",
            "client_key",
            json_answer("TransferOffer", "The worker writes to `writer_url`."),
            (*worker_post, 503),
            "TransferRequest",
            lease,
        ),
        row(
            "post",
            "/{job_id}/status",
            "Set a job's state and progress",
            "client_key",
            json_answer("JobStatus", "The new state."),
            worker_post,
            "StatusUpdate",
            lease,
        ),
        row(
            "post",
            "/{job_id}/heartbeat",
            "Renew the lease on a job",
            "client_key",
            json_answer("JobStatus", "The state and the lease's new end."),
            worker_post,
            description=lease,
        ),
    ]


def _transfer_routes() -> list[Route]:
    return [
        Route(
            "post",
            "/api/transfer",
            "Open a transfer channel",
            "transfer",
            "api_key_or_client_key",
            (Answer(200, "The channel.", ((JSON, _ref("TransferChannel")),)),),
            (401, 503),
            error_style="plain",
        ),
        Route(
            "get",
            "/api/transfer/{channel_id}",
            "Read a channel (waits for its writer)",
            "transfer",
            "api_key_or_client_key",
            (
                Answer(
                    200,
                    "The writer's bytes; a writer that fails cuts the connection.",
                    (("application/octet-stream", {"type": "string"}),),
                ),
            ),
            (401, 404, 409, 410, 502),
            error_style="plain",
        ),
        Route(
            "post",
            "/api/transfer/{channel_id}",
            "Write a channel (waits for its reader)",
            "transfer",
            "api_key_or_client_key",
            (Answer(200, "The reader got every byte.", ((JSON, _ref("TransferDone")),)),),
            (401, 404, 409, 410, 502),
            error_style="plain",
            body=True,
            body_content=(("application/octet-stream", {"type": "string"}),),
        ),
    ]


# -- end of jobs and transfer ------------------------------------------------------------------

# -- client keys and the admin API (nfrx.plugins.keys) -------------------------------------------

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
            _ref("ClientKey"),
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
        "properties": {"keys": {"type": "array", "items": _ref("ClientKey")}},
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


def _keys_routes() -> list[Route]:
    def key_answer(description: str, status: int = 200) -> tuple[Answer, ...]:
        schema = "ClientKeyCreated" if status == 201 else "ClientKey"
        return (Answer(status, description, ((JSON, _ref(schema)),)),)

    body = ((JSON, _ref("ClientKeyRequest")),)
    return [
        Route(
            "get",
            "/api/admin/keys",
            "List the client keys (revoked ones too) with their usage",
            "admin",
            "admin",
            (Answer(200, "The keys.", ((JSON, _ref("ClientKeyList")),)),),
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
            (Answer(200, "This server's agent settings.", ((JSON, _ref("AgentSetup")),)),),
            (401, 403),
        ),
    ]


# -- end of client keys ---------------------------------------------------------------------------

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "An OpenAI-style error (every route but /v1/messages).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string", "description": "for people"},
                    "type": {"type": "string", "examples": ["invalid_request_error"]},
                    "code": {"type": "string", "examples": ["model_not_found"]},
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "description": "An Anthropic-style error (/v1/messages).",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "examples": ["not_found_error"]},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "RequestBody": {
        "type": "object",
        "description": "Forwarded to the backend byte for byte; the gateway reads only `model` "
        "(to route) and rejects a body that is not a JSON object with one.",
        "required": ["model"],
        "properties": {"model": {"type": "string", "minLength": 1}},
        "additionalProperties": True,
    },
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
    "DoclingRequest": {
        "type": "object",
        "description": "docling-serve's request, streamed to the agent unread.",
        "additionalProperties": True,
    },
    "Relayed": {
        "type": "object",
        "description": "The backend's answer, passed through unchanged.",
        "additionalProperties": True,
    },
    "EventStream": {
        "type": "string",
        "description": "Server-sent events, relayed as they arrive. While the request waits in "
        "the queue: `: nfrx.queue {...}` comment lines (named `event: nfrx.queue` events with "
        "the request header `X-Nfrx-Queue-Events: events`); a failure after the start: a final "
        "`event: error`.",
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string", "description": "the serving agents' names, joined"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
    "Index": {
        "type": "object",
        "description": "Where this server's pages and APIs are (paths on this server).",
        "required": ["name", "version", "dashboard", "docs", "openapi", "health", "state", "apis"],
        "properties": {
            "name": {"const": "nfrx"},
            "version": {"type": "string"},
            "dashboard": {"type": "string", "examples": ["/state"]},
            "docs": {"type": "string", "examples": ["/api/client/"]},
            "openapi": {"type": "string", "examples": ["/api/client/openapi.json"]},
            "health": {"type": "string", "examples": ["/healthz"]},
            "state": {"type": "string", "examples": ["/api/state"]},
            "apis": {
                "type": "object",
                "description": "enabled plugin -> where its client API starts",
                "additionalProperties": {"type": "string"},
                "examples": [{"llm": "/api/llm/v1", "mcp": "/api/mcp/id/{id}"}],
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "agents"],
        "properties": {
            "status": {"enum": ["ok", "draining"]},
            "agents": {
                "type": "object",
                "description": "connected agents per kind",
                "additionalProperties": {"type": "integer"},
            },
        },
    },
    "JsonRpcMessage": {
        "type": "object",
        "description": "One JSON-RPC 2.0 message (request, notification or response), relayed "
        "byte for byte; the relay reads only `id`, `method` and progress/cancel fields.",
        "required": ["jsonrpc"],
        "properties": {"jsonrpc": {"const": "2.0"}},
        "additionalProperties": True,
    },
    "JsonRpcError": {
        "type": "object",
        "description": "A JSON-RPC error produced by the relay itself: code -32603 (or -32700 / "
        "-32600 for a malformed body) and `data.nfrx.code` naming it (MCP_UNAUTHORIZED, "
        "MCP_FORBIDDEN, MCP_RELAY_NOT_FOUND, MCP_SESSION_NOT_FOUND, MCP_LIMIT_EXCEEDED, "
        "MCP_PROVIDER_UNAVAILABLE, MCP_DRAINING, MCP_INVALID_MESSAGE, MCP_TIMEOUT, ...).",
        "required": ["jsonrpc", "id", "error"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer", "null"]},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "data": {"type": "object"},
                },
            },
        },
    },
    "State": {
        "type": "object",
        "description": "A snapshot of the server, its agents and queues.",
        "additionalProperties": True,
    },
    **JOBS_SCHEMAS,
    **KEYS_SCHEMAS,
}

ERROR_MEANINGS = {
    400: "The body is not a JSON object with a `model`.",
    401: "Missing or wrong key; a client key that is revoked, expired or disabled "
    "(`key_revoked`, `key_expired`, `key_disabled`).",
    403: "A client key that may not use this model or route (`model_not_allowed`, "
    "`route_not_allowed`); the admin API without API_KEY or ADMIN_HTTP_ROLES (`admin_disabled`).",
    404: "Unknown model, agent, route or client key.",
    409: "A client key's name is taken (`name_taken`), or the key is revoked (`key_revoked`).",
    429: "A client key's limit: `rate_limit_exceeded` (per minute) or `insufficient_quota` (its "
    "day's or month's tokens); see Retry-After.",
    413: "The body is larger than MAX_REQUEST_BYTES (MAX_UPLOAD_BYTES for docling and asr).",
    502: "The agent or its backend failed.",
    503: "Busy (`worker_busy`, `queue_timeout`) or draining, see Retry-After; the key store "
    "failed (`store_unavailable`, admin API).",
    504: "The request timed out (`timeout`, `idle_timeout`).",
}

MCP_ERROR_MEANINGS = {
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

PARAMETERS = {
    "agent_id": "The agent's CLIENT_ID: only this agent serves the request.",
    "model_id": "A model id; it may contain `:` and `/`.",
    "asset": "One of Swagger UI's static files.",
    "task_id": "The id an async docling conversion answered; served by the agent that issued it.",
    "relay_id": "The MCP relay's CLIENT_ID (the `nfrx mcp` agent serving one provider).",
    "job_id": "The id `POST /api/jobs` answered.",
    "channel_id": "The id of a transfer channel (`POST /api/transfer`, or a job's payload or "
    "result).",
    "key": "A client key's id, or its name.",
}

_RELAYED = (
    ("/chat/completions", "Chat completion (OpenAI)"),
    ("/completions", "Text completion (OpenAI)"),
    ("/responses", "Response (OpenAI Responses API)"),
    ("/embeddings", "Embeddings (OpenAI); an `input` array is split across agents"),
)
_RELAY_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)
_RELAY_ANSWER = Answer(
    200,
    "The backend's answer (its own error statuses pass through unchanged too).",
    ((JSON, _ref("Relayed")), (SSE, _ref("EventStream"))),
)
_LLM_PREFIXES = (
    ("/api/llm/v1", ""),
    ("/api/llm/id/{agent_id}/v1", " on one agent"),
)

ASSET_TYPES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "index.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
"""Swagger UI's files served as they ship (``swagger-initializer.js`` is ours, see below)."""

INITIALIZER = "swagger-initializer.js"


def _model_routes(prefix: str, where: str, tag: str, listing: str, noun: str) -> list[Route]:
    """``GET <prefix>/models`` and ``/models/{model_id}`` (the LLM and ASR catalogues)."""
    return [
        Route(
            "get",
            f"{prefix}/models",
            listing + where,
            tag,
            "api_key",
            (Answer(200, "The models.", ((JSON, _ref("ModelList")),)),),
            (401, 404, 503),
        ),
        Route(
            "get",
            f"{prefix}/models/{{model_id}}",
            f"Retrieve one {noun}{where}",
            tag,
            "api_key",
            (Answer(200, "The model.", ((JSON, _ref("Model")),)),),
            (401, 404, 503),
        ),
    ]


def _llm_routes() -> list[Route]:
    rows: list[Route] = []
    for prefix, where in _LLM_PREFIXES:
        rows += _model_routes(prefix, where, "llm", "List the connected agents' models", "model")
        rows += [
            Route(
                "post",
                f"{prefix}{path}",
                summary + where,
                "llm",
                "api_key",
                (_RELAY_ANSWER,),
                _RELAY_ERRORS,
                body=True,
            )
            for path, summary in _RELAYED
        ]
        rows.append(
            Route(
                "post",
                f"{prefix}/messages",
                f"Message (Anthropic-compatible){where}",
                "llm",
                "api_key_or_x_api_key",
                (_RELAY_ANSWER,),
                _RELAY_ERRORS,
                error_style="anthropic",
                body=True,
                description="For backends that speak Anthropic's API (llama.cpp). Errors are "
                "in Anthropic's shape.",
            )
        )
    return rows


_ASR_PREFIXES = (
    ("/api/asr/v1", ""),
    ("/api/asr/id/{agent_id}/v1", " on one agent"),
)
_MULTIPART = "multipart/form-data"


def _connect(kind: str) -> Route:
    return Route(
        "get",
        f"/api/{kind}/connect",
        f"The WebSocket that `nfrx {kind}` agents dial",
        "agents",
        "client_key",
        (Answer(101, "Switching Protocols: the tunnel is open."),),
        (401,),
        description="A WebSocket upgrade authenticated with the client key (CLIENT_KEY). Not "
        "callable from this page.",
    )


def _asr_routes() -> list[Route]:
    rows: list[Route] = []
    for prefix, where in _ASR_PREFIXES:
        rows += _model_routes(
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
                (_RELAY_ANSWER,),
                _RELAY_ERRORS,
                body=True,
                body_content=((_MULTIPART, _ref("TranscriptionForm")),),
            )
            for path, summary in (
                ("/audio/transcriptions", "Transcription (OpenAI)"),
                ("/audio/translations", "Translation to English (OpenAI)"),
            )
        ]
    return rows


def _docling_routes() -> list[Route]:
    converted = Answer(200, "docling-serve's answer, passed through.", ((JSON, _ref("Relayed")),))
    rows = [
        Route(
            "post",
            f"/api/docling/v1{path}",
            summary,
            "docling",
            "api_key",
            (converted,),
            _RELAY_ERRORS,
            body=True,
            body_content=((media, _ref("DoclingRequest")),),
        )
        for path, summary, media in (
            ("/convert/source", "Convert documents from URLs or base64 sources", JSON),
            ("/convert/file", "Convert uploaded files", _MULTIPART),
            ("/convert/source/async", "Start converting sources; answers a task id", JSON),
            (
                "/convert/file/async",
                "Start converting uploaded files; answers a task id",
                _MULTIPART,
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


_MCP_ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)
_MCP_PATHS = ("/api/mcp/id/{relay_id}", "/api/mcp/id/{relay_id}/")


def _mcp_routes() -> list[Route]:
    rows: list[Route] = []
    answered = Answer(
        200,
        "The provider's answer: one JSON-RPC message, or server-sent events relayed as they "
        "arrive; a relay failure after dispatch is a JSON-RPC error (`data.nfrx.code`) as the "
        "body or as the final event.",
        ((JSON, _ref("JsonRpcMessage")), (SSE, _ref("EventStream"))),
    )
    for path in _MCP_PATHS:
        where = " (trailing slash; never redirected)" if path.endswith("/") else ""
        rows += [
            Route(
                "post",
                path,
                f"Send one MCP message (Streamable HTTP, both eras){where}",
                "mcp",
                "api_key_or_relay_token",
                (answered, Answer(202, "A notification or response was accepted.")),
                _MCP_ERRORS,
                error_style="jsonrpc",
                body=True,
                body_content=((JSON, _ref("JsonRpcMessage")),),
                description="Requests answer JSON or SSE as the provider chooses; the relay "
                "cancels a request after MCP_CALL_TIMEOUT without provider activity.",
            ),
            Route(
                "get",
                path,
                f"Open the session's server-to-client event stream{where}",
                "mcp",
                "api_key_or_relay_token",
                (Answer(200, "Server-sent events.", ((SSE, _ref("EventStream")),)),),
                _MCP_ERRORS,
                error_style="jsonrpc",
            ),
            Route(
                "delete",
                path,
                f"End an MCP session{where}",
                "mcp",
                "api_key_or_relay_token",
                (Answer(200, "The provider's answer (it may also be 405)."),),
                _MCP_ERRORS,
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


ROUTES: tuple[Route, ...] = (
    Route(
        "get",
        "/",
        "Where to start: the dashboard for browsers, an index for API clients",
        "server",
        "none",
        (
            Answer(
                200, "For API clients (Accept: application/json or */*).", ((JSON, _ref("Index")),)
            ),
            Answer(302, "For browsers (Accept: text/html): to the dashboard, /state."),
        ),
    ),
    Route(
        "get",
        "/healthz",
        "Liveness and connected agents",
        "server",
        "none",
        (
            Answer(200, "Serving.", ((JSON, _ref("Health")),)),
            Answer(503, "Draining: no new requests.", ((JSON, _ref("Health")),)),
        ),
    ),
    Route(
        "get",
        "/api/llm/connect",
        "The WebSocket that `nfrx llm` agents dial",
        "agents",
        "client_key",
        (Answer(101, "Switching Protocols: the tunnel is open."),),
        (401,),
        description="A WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`) "
        "authenticated with the client key (CLIENT_KEY), never the API key. Not callable from "
        "this page.",
    ),
    *_llm_routes(),
    _connect("mcp"),
    *_mcp_routes(),
    _connect("docling"),
    *_docling_routes(),
    _connect("asr"),
    *_asr_routes(),
    *_jobs_routes(),
    *_transfer_routes(),
    Route(
        "get",
        "/api/state",
        "Snapshot of the server, agents and queues",
        "state",
        "api_key",
        (Answer(200, "The state.", ((JSON, _ref("State")),)),),
        (401,),
    ),
    Route(
        "get",
        "/api/state/stream",
        "The state as server-sent events",
        "state",
        "api_key",
        (Answer(200, "One event per snapshot.", ((SSE, {"type": "string"}),)),),
        (401,),
    ),
    *(
        Route(
            "get",
            path,
            f"Dashboard: {what} (HTML; its scripts call /api/state with a key)",
            "state",
            "none",
            (Answer(200, "The page.", ((HTML, {"type": "string"}),)),),
        )
        for path, what in (
            ("/state", "charts, agents, models, relays, jobs"),
            ("/state/keys", "client keys (create, revoke)"),
            ("/state/connect", "connect an agent"),
        )
    ),
    *_keys_routes(),
    Route(
        "get",
        "/metrics",
        "Prometheus metrics",
        "state",
        "none",
        (Answer(200, "Prometheus text format.", (("text/plain", {"type": "string"}),)),),
        description="On the main port unless METRICS_PORT names another one.",
    ),
    Route(
        "get",
        f"{PREFIX}/",
        "This API's documentation (Swagger UI)",
        "docs",
        "none",
        (Answer(200, "The page.", ((HTML, {"type": "string"}),)),),
    ),
    Route(
        "get",
        f"{PREFIX}/openapi.json",
        "This OpenAPI document",
        "docs",
        "none",
        (Answer(200, "The document.", ((JSON, {"type": "object"}),)),),
    ),
    Route(
        "get",
        f"{PREFIX}/{{asset}}",
        "Swagger UI's static files",
        "docs",
        "none",
        (Answer(200, "The file.", (("application/octet-stream", {"type": "string"}),)),),
        (404,),
    ),
)

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "api_key": [{"apiKey": []}],
    "api_key_or_x_api_key": [{"apiKey": []}, {"xApiKey": []}],
    "api_key_or_relay_token": [{"apiKey": []}, {"relayToken": []}],
    "client_key": [{"clientKey": []}],
    "api_key_or_client_key": [{"apiKey": []}, {"clientKey": []}],
    "admin": [{"apiKey": []}],
}

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <API_KEY>` (not required when API_KEY is unset), "
        "or a client key (`nfrx-…`, /api/admin/keys) within its rules. The admin API takes only "
        "API_KEY (or an ADMIN_HTTP_ROLES role).",
    },
    "xApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "The API key as Anthropic clients send it (/v1/messages).",
    },
    "relayToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <AUTH_TOKEN>`: the token an MCP relay's agent "
        "was started with (MCP routes of that relay only).",
    },
    "clientKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <CLIENT_KEY>`: agents only.",
    },
}


_STYLE_NAMES: dict[ErrorStyle, tuple[str, str]] = {
    "openai": ("OpenAI", "Error"),
    "anthropic": ("Anthropic", "AnthropicError"),
    "jsonrpc": ("JsonRpc", "JsonRpcError"),
    "plain": ("Plain", "PlainError"),
}
"""Error style -> (prefix of the shared response names, body schema)."""


def _error_name(style: ErrorStyle, status: int) -> str:
    return f"{_STYLE_NAMES[style][0]}Error{status}"


def _operation(route: Route, error_responses: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for answer in route.answers:
        response: dict[str, Any] = {"description": answer.description}
        if answer.content:
            response["content"] = {media: {"schema": schema} for media, schema in answer.content}
        responses[str(answer.status)] = response
    for status in route.errors:
        name = _error_name(route.error_style, status)
        schema = _STYLE_NAMES[route.error_style][1]
        meanings = {"jsonrpc": MCP_ERROR_MEANINGS, "plain": PLAIN_ERROR_MEANINGS}.get(
            route.error_style, ERROR_MEANINGS
        )
        error_responses[name] = {
            "description": meanings.get(status, "Error."),
            "content": {JSON: {"schema": _ref(schema)}},
        }
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "security": _SECURITY[route.auth],
        "responses": responses,
    }
    if route.description:
        operation["description"] = route.description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PARAMETERS[name],
            "schema": {"type": "string"},
        }
        for name in re.findall(r"\{(\w+)\}", route.path)
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        content = route.body_content or ((JSON, _ref("RequestBody")),)
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": schema} for media, schema in content},
        }
    return operation


def _operation_id(route: Route) -> str:
    words = re.findall(r"[A-Za-z0-9]+", route.path.replace("{", "by_"))
    if route.path.endswith("}/"):  # the trailing-slash twin of a parameterised route
        words.append("slash")
    return "_".join([route.method, *words]) if words else f"{route.method}_root"


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document for :data:`ROUTES`."""
    paths: dict[str, dict[str, Any]] = {}
    error_responses: dict[str, Any] = {}
    for route in ROUTES:
        operations = paths.setdefault(route.path, {})
        if route.method in operations:
            raise ValueError(f"{route.method.upper()} {route.path} is listed twice")
        operations[route.method] = _operation(route, error_responses)
    asset = paths[f"{PREFIX}/{{asset}}"]["get"]["parameters"][0]
    asset["schema"] = {"type": "string", "enum": [*sorted(ASSET_TYPES), INITIALIZER]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nfrx",
            "version": __version__,
            "summary": "A gateway that relays OpenAI- and Anthropic-compatible requests to "
            "agents next to private AI services.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        # Relative to this document (/api/client/openapi.json), so the page keeps working when a
        # reverse proxy serves nfrx under a prefix.
        "servers": [{"url": "../..", "description": "this server"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": dict(sorted(error_responses.items())),
            "securitySchemes": SECURITY_SCHEMES,
        },
        "tags": [
            {"name": "llm", "description": "OpenAI- and Anthropic-compatible routes"},
            {"name": "mcp", "description": "MCP relays (Streamable HTTP, both protocol eras)"},
            {"name": "docling", "description": "Document conversion (docling-serve)"},
            {"name": "asr", "description": "Speech to text (OpenAI-compatible)"},
            {"name": "jobs", "description": "Jobs for your own workers (the original's API)"},
            {"name": "transfer", "description": "One-time byte streams between two peers"},
            {"name": "server", "description": "The server itself"},
            {"name": "state", "description": "State, dashboard and metrics"},
            {"name": "agents", "description": "Where agents connect"},
            {"name": "docs", "description": "This documentation"},
            {"name": "admin", "description": "Client keys and agent setup (API_KEY only)"},
        ],
    }


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nfrx API</title>
<link rel="stylesheet" href="./swagger-ui.css">
<link rel="stylesheet" href="./index.css">
<link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="./favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="./swagger-ui-bundle.js"></script>
<script src="./swagger-initializer.js"></script>
</body>
</html>
"""

# The document names its server relative to itself ("../..", so that a reverse proxy may serve
# nfrx under a prefix), and Swagger UI would show that text in its server list: the page loads
# the document itself and shows the URL it resolves to (http://host:port, or with the prefix).
# validatorUrl: null -- Swagger UI would otherwise send the document to validator.swagger.io.
INITIALIZER_JS = """window.onload = async function () {
  const url = new URL("./openapi.json", window.location.href);
  const spec = await (await fetch(url)).json();
  spec.servers = (spec.servers || []).map((server) => (
    {...server, url: new URL(server.url, url).href.replace(/[/]$/, "")}));
  window.ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout"
  });
};
"""


def swagger_ui_dir() -> Path | None:
    """Where ``swagger-ui-py`` keeps Swagger UI's files (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def blueprint() -> Blueprint:
    """``GET /api/client/`` (Swagger UI), ``/api/client/openapi.json`` and the UI's files."""
    bp = Blueprint("client", __name__, url_prefix=PREFIX)
    document = json.dumps(build_document(), indent=1).encode()
    cache: dict[str, bytes] = {}

    @bp.get("/")
    async def page() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        return Response(document, content_type=JSON)

    @bp.get("/<asset>")
    async def asset(asset: str) -> Response:
        if asset == INITIALIZER:
            return Response(INITIALIZER_JS, content_type=ASSET_TYPES["swagger-ui-bundle.js"])
        content_type = ASSET_TYPES.get(asset)
        if content_type is None:
            raise HttpError(404, "not_found", "no such route")
        data = cache.get(asset)
        if data is None:
            folder = swagger_ui_dir()
            if folder is None:
                raise HttpError(
                    500, "docs_unavailable", "swagger-ui-py is not installed on the server"
                )
            data = cache[asset] = await trio.Path(folder / asset).read_bytes()
        response = Response(data, content_type=content_type)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    return bp
