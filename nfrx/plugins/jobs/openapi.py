"""The jobs API's part of the OpenAPI document (:mod:`nfrx.server.openapi`)."""

from __future__ import annotations

from typing import Any, Literal

from nfrx.plugins.jobs.model import STATUSES as JOB_STATUSES
from nfrx.plugins.transfer.openapi import PLAIN_ERROR_MEANINGS
from nfrx.server.openapi import JSON, SSE, Answer, ApiPart, Auth, Route, ref

SCHEMAS: dict[str, dict[str, Any]] = {
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
            "payloads": {"type": "object", "additionalProperties": ref("TransferInfo")},
            "results": {"type": "object", "additionalProperties": ref("TransferInfo")},
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
}


def _json_answer(schema: str, description: str) -> tuple[Answer, ...]:
    return (Answer(200, description, ((JSON, ref(schema)),)),)


def _row(
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
        body_content=((JSON, ref(body)),) if body else (),
        description=description,
    )


EVENTS = (Answer(200, "Server-sent events.", ((SSE, {"type": "string"}),)),)
LEASE = "The worker sends the claim's lease token (X-Nfrx-Lease header or `lease_token`)."
WORKER_POST = (400, 401, 403, 404, 409, 413)


def client_routes() -> list[Route]:
    """The routes of the jobs' clients (the API key)."""
    return [
        _row(
            "post",
            "",
            "Create a job",
            "api_key",
            _json_answer("JobCreated", "Queued."),
            (400, 401, 413, 503),
            "JobCreate",
        ),
        _row(
            "get",
            "/{job_id}",
            "A job, with its queue position",
            "api_key",
            _json_answer("Job", "The job."),
            (401, 404),
            description="A poll counts as the client being there (JOBS_CLIENT_TTL).",
        ),
        _row(
            "get",
            "/{job_id}/events",
            "A job's events",
            "api_key",
            EVENTS,
            (401, 404),
            description="`status` (a Job), `payload` and `result` (a TransferInfo) events; the "
            "stream ends JOBS_SSE_CLOSE_DELAY after the final status.",
        ),
        _row(
            "post",
            "/{job_id}/cancel",
            "Cancel a job",
            "api_key",
            _json_answer("JobStatus", "The job's status (a finished job is left as it is)."),
            (401, 404),
        ),
    ]


def worker_routes() -> list[Route]:
    """The routes of the workers (the client key)."""
    return [
        _row(
            "post",
            "/claim",
            "Claim a job (long poll)",
            "client_key",
            (
                *_json_answer("Claim", "A job, now the caller's."),
                Answer(204, "No job within max_wait_seconds."),
            ),
            (400, 401, 413),
            "ClaimRequest",
        ),
        _row(
            "get",
            "/stream",
            "Claim jobs as they come",
            "client_key",
            EVENTS,
            (400, 401),
            description="Query: `types` (comma-separated), `worker_id`, `worker_group`, "
            "`max_active`. `job` events carry claims; `cancel` events say a job was taken "
            "away.",
        ),
        _row(
            "post",
            "/{job_id}/payload",
            "Open the job's payload channel",
            "client_key",
            _json_answer("TransferOffer", "The worker reads `reader_url`."),
            (*WORKER_POST, 503),
            "TransferRequest",
            LEASE,
        ),
        _row(
            "post",
            "/{job_id}/result",
            "Open the job's result channel",
            "client_key",
            _json_answer("TransferOffer", "The worker writes to `writer_url`."),
            (*WORKER_POST, 503),
            "TransferRequest",
            LEASE,
        ),
        _row(
            "post",
            "/{job_id}/status",
            "Set a job's state and progress",
            "client_key",
            _json_answer("JobStatus", "The new state."),
            WORKER_POST,
            "StatusUpdate",
            LEASE,
        ),
        _row(
            "post",
            "/{job_id}/heartbeat",
            "Renew the lease on a job",
            "client_key",
            _json_answer("JobStatus", "The state and the lease's new end."),
            WORKER_POST,
            description=LEASE,
        ),
    ]


def api() -> ApiPart:
    return ApiPart(
        (*client_routes(), *worker_routes()),
        SCHEMAS,
        parameters={"job_id": "The id `POST /api/jobs` answered."},
        tags=(("jobs", "Jobs for your own workers (the original's API)"),),
        error_meanings={"plain": PLAIN_ERROR_MEANINGS},
    )
