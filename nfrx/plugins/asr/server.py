"""The ASR plugin, server side: OpenAI-compatible speech-to-text routes under ``/api/asr``.

``/api/asr/connect`` is the WebSocket ``nfrx asr`` agents dial; ``/api/asr/v1/...`` are the routes
OpenAI clients call (``audio.transcriptions.create``). The multipart upload is streamed to the
agent: the server reads it only up to the ``model`` form field it routes on (spooling what it read,
to replay it), then relays the rest as the client sends it. Routing, queueing, retries, drain,
state and metrics are the LLM plugin's, through :class:`~nfrx.server.proxy.Job`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response, request

from nfrx.server.agent_socket import serve_agent
from nfrx.server.catalog import ModelCatalog
from nfrx.server.http_errors import HttpError
from nfrx.server.proxy import Job
from nfrx.server.upload import multipart_boundary, read_field

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.server.gateway import Gateway

KIND = "asr"

RELAYED_PATHS = ("/audio/transcriptions", "/audio/translations")
"""Relayed as they are; each also exists under ``/api/asr/id/{agent}/v1``."""


def _bad_request(code: str, message: str) -> HttpError:
    return HttpError(400, code, message, type="invalid_request_error")


def blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint(KIND, __name__, url_prefix=f"/api/{KIND}")
    catalog = ModelCatalog(gateway, KIND)

    @bp.before_request
    async def admit() -> None:
        gateway.admit()

    @bp.websocket("/connect")
    async def connect() -> Response | None:
        return await serve_agent(gateway, KIND)

    catalog.add_routes(bp)

    async def relay(path: str, agent_id: str | None) -> Response:
        request_id = gateway.request_id()
        if agent_id is not None:
            catalog.table(agent_id)  # 404 at once for an unknown agent
        boundary = multipart_boundary(request.headers.get("Content-Type"))
        if boundary is None:
            raise _bad_request(
                "invalid_content_type", "the request body must be multipart/form-data"
            )
        upload = gateway.upload()
        try:
            model = await read_field(upload, boundary, "model")
        except ValueError as exc:
            raise _bad_request("invalid_body", f"malformed multipart body: {exc}") from exc
        if not model:
            raise _bad_request("missing_model", "the form needs a 'model' field (non-empty)")
        prefix = f"/api/{KIND}" + (f"/id/{agent_id}" if agent_id else "")
        # Same alias rule as the LLM routes; the spooled form field is renamed on replay.
        ticket = catalog.ticket(model, request_id, agent_id)
        cleanups = gateway.cleanups()
        job = Job.relay(
            gateway,
            ticket,
            path=path,
            body=upload,
            label=f"POST {prefix}/v1{path}",
            cleanups=cleanups,
        )
        exchange, head = await job.start(cleanups)
        return job.response(exchange, head)

    def route(path: str) -> Callable[..., Awaitable[Response]]:
        async def handler(agent_id: str | None = None) -> Response:
            return await relay(path, agent_id)

        return handler

    for path in RELAYED_PATHS:
        endpoint = path.strip("/").replace("/", "_")
        view = route(path)
        bp.add_url_rule(f"/v1{path}", endpoint, view, methods=["POST"])
        bp.add_url_rule(f"/id/<agent_id>/v1{path}", f"id_{endpoint}", view, methods=["POST"])

    return bp
