"""The transfer API's part of the OpenAPI document (:mod:`nfrx.server.openapi`)."""

from __future__ import annotations

from typing import Any

from nfrx.server.openapi import JSON, Answer, ApiPart, Route, ref

SCHEMAS: dict[str, dict[str, Any]] = {
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
"""The ``plain`` error style's statuses on the jobs and transfer APIs."""


def routes() -> list[Route]:
    return [
        Route(
            "post",
            "/api/transfer",
            "Open a transfer channel",
            "transfer",
            "api_key_or_client_key",
            (Answer(200, "The channel.", ((JSON, ref("TransferChannel")),)),),
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
            (Answer(200, "The reader got every byte.", ((JSON, ref("TransferDone")),)),),
            (401, 404, 409, 410, 502),
            error_style="plain",
            body=True,
            body_content=(("application/octet-stream", {"type": "string"}),),
        ),
    ]


def api() -> ApiPart:
    return ApiPart(
        tuple(routes()),
        SCHEMAS,
        parameters={
            "channel_id": "The id of a transfer channel (`POST /api/transfer`, or a job's "
            "payload or result).",
        },
        tags=(("transfer", "One-time byte streams between two peers"),),
        error_meanings={"plain": PLAIN_ERROR_MEANINGS},
    )
