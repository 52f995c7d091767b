"""The ASR plugin, server side: OpenAI-compatible speech-to-text routes under ``/api/asr``.

``/api/asr/connect`` is the WebSocket ``nfrx asr`` agents dial; ``/api/asr/v1/...`` are the routes
OpenAI clients call (``audio.transcriptions.create``). The multipart upload is streamed to the
agent: the server reads it only up to the ``model`` form field it routes on (spooling what it read,
to replay it), then relays the rest as the client sends it. Routing, queueing, retries, drain,
state and metrics are the LLM plugin's, through :class:`~nfrx.server.proxy.Job`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request
from werkzeug.datastructures import Headers

from nfrx.server.agent_socket import serve_agent
from nfrx.server.http_errors import HttpError, model_not_found
from nfrx.server.proxy import Job
from nfrx.server.queue import Ticket
from nfrx.server.upload import multipart_boundary, read_field

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord

KIND = "asr"

ALIAS_SCORE = 0.5
"""The score of an alias match (as for LLM models): ``LLM_MIN_SCORE`` above it turns it off."""

RELAYED_PATHS = ("/audio/transcriptions", "/audio/translations")
"""Relayed as they are; each also exists under ``/api/asr/id/{agent}/v1``."""


def _bad_request(code: str, message: str) -> HttpError:
    return HttpError(400, code, message, type="invalid_request_error")


def agent_not_found(agent_id: str) -> HttpError:
    return HttpError(
        404,
        "agent_not_found",
        f"no {KIND} agent with id {agent_id!r} is connected",
        type="invalid_request_error",
    )


def blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint(KIND, __name__, url_prefix=f"/api/{KIND}")
    registry = gateway.registry

    def model_table(agent_id: str | None) -> dict[str, list[AgentRecord]]:
        if agent_id is None:
            return registry.models(KIND)
        agent = registry.get(KIND, agent_id)
        if agent is None or agent.session.closed:
            raise agent_not_found(agent_id)
        return {model: [agent] for model in agent.models}

    def model_object(model: str, agents: list[AgentRecord]) -> dict[str, Any]:
        return {
            "id": model,
            "object": "model",
            "created": registry.model_created(KIND, model),
            "owned_by": ",".join(sorted(a.name for a in agents)),
        }

    def missing(agent_id: str | None, model: str) -> HttpError:
        if agent_id is not None and registry.get(KIND, agent_id) is None:
            return agent_not_found(agent_id)
        return model_not_found(model)

    @bp.before_request
    async def admit() -> None:
        gateway.admit()

    @bp.websocket("/connect")
    async def connect() -> Response | None:
        return await serve_agent(gateway, KIND)

    @bp.get("/v1/models")
    @bp.get("/id/<agent_id>/v1/models")
    async def list_models(agent_id: str | None = None) -> dict[str, Any]:
        data = [model_object(m, agents) for m, agents in sorted(model_table(agent_id).items())]
        return {"object": "list", "data": data}

    @bp.get("/v1/models/<path:model_id>")
    @bp.get("/id/<agent_id>/v1/models/<path:model_id>")
    async def retrieve_model(model_id: str, agent_id: str | None = None) -> dict[str, Any]:
        agents = model_table(agent_id).get(model_id)
        if not agents:
            raise model_not_found(model_id)
        return model_object(model_id, agents)

    async def relay(path: str, agent_id: str | None) -> Response:
        request_id = gateway.request_id()
        if agent_id is not None:
            model_table(agent_id)  # 404 at once for an unknown agent
        boundary = multipart_boundary(request.headers.get("Content-Type"))
        if boundary is None:
            raise _bad_request(
                "invalid_content_type", "the request body must be multipart/form-data"
            )
        upload = gateway.upload()
        try:
            model = await read_field(upload, boundary, "model")
        except ValueError as exc:
            raise _bad_request("invalid_body", f"malformed multipart body: {exc}") from None
        if not model:
            raise _bad_request("missing_model", "the form needs a 'model' field (non-empty)")
        prefix = f"/api/{KIND}" + (f"/id/{agent_id}" if agent_id else "")
        ticket = Ticket(
            kind=KIND,
            model=model,
            request_id=request_id,
            agent_id=agent_id,
            # Same alias rule as the LLM routes; the spooled form field is renamed on replay.
            aliases=gateway.config.llm_min_score <= ALIAS_SCORE,
            missing=functools.partial(missing, agent_id, model),
        )
        job = Job(
            gateway=gateway,
            ticket=ticket,
            method="POST",
            path=path,
            headers=gateway.forwarded_headers(request_id),
            body=upload,
            request_id=request_id,
            label=f"POST {prefix}/v1{path}",
        )
        cleanups = gateway.cleanups()
        cleanups.append(functools.partial(gateway.queue.abandon, ticket))
        exchange, head = await job.start(cleanups)
        headers, event_stream = job.response_parts(exchange, head)
        response = Response(
            job.answer(exchange, head, event_stream), status=head.status, headers=Headers(headers)
        )
        response.timeout = None  # Quart's 60 s default would cut long transcriptions
        return response

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
