"""The LLM plugin, server side: OpenAI-compatible routes under ``/api/llm``.

``/api/llm/connect`` is the WebSocket ``nfrx llm`` agents dial; ``/api/llm/v1/...`` are the routes
OpenAI clients call. Request bodies are forwarded byte for byte; the server parses them only to
read ``model`` (for routing) and to reject what no backend could accept.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any, cast

from quart import Blueprint, Response, request
from werkzeug.datastructures import Headers

from nfrx.plugins.llm.embeddings import run_split, splittable
from nfrx.server.agent_socket import serve_agent
from nfrx.server.http_errors import HttpError, model_not_found
from nfrx.server.proxy import Job
from nfrx.server.queue import Ticket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from nfrx.server.gateway import Gateway
    from nfrx.server.http_errors import ErrorStyle
    from nfrx.server.registry import AgentRecord

log = logging.getLogger("nfrx.llm")

KIND = "llm"


def parse_body(body: bytes) -> dict[str, Any]:
    """An OpenAI or Anthropic request body with its ``model``; 400 with a precise reason
    otherwise."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise HttpError(
            400, "invalid_json", "the request body is not valid JSON", type="invalid_request_error"
        ) from None
    if not isinstance(payload, dict):
        raise HttpError(
            400,
            "invalid_body",
            "the request body must be a JSON object",
            type="invalid_request_error",
        )
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise HttpError(
            400,
            "missing_model",
            "the request body needs a 'model' (a non-empty string)",
            type="invalid_request_error",
        )
    return payload


ALIAS_SCORE = 0.5
"""The original's score for an alias match: ``LLM_MIN_SCORE`` above it turns aliasing off."""


def rewrite_model(body: bytes, model: str) -> bytes:
    payload = json.loads(body)
    payload["model"] = model
    return json.dumps(payload, ensure_ascii=False).encode()


RELAYED_PATHS = ("/chat/completions", "/completions", "/responses", "/embeddings")
"""OpenAI routes relayed as they are; each also exists under ``/api/llm/id/{agent}/v1``."""


def model_object(gateway: Gateway, model: str, owners: list[str]) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": gateway.registry.model_created(KIND, model),
        "owned_by": ",".join(sorted(owners)),
    }


def agent_not_found(agent_id: str) -> HttpError:
    return HttpError(
        404,
        "agent_not_found",
        f"no {KIND} agent with id {agent_id!r} is connected",
        type="invalid_request_error",
    )


def _response(body: AsyncIterator[bytes], status: int, headers: list[tuple[str, str]]) -> Response:
    response = Response(body, status=status, headers=Headers(headers))
    response.timeout = None  # Quart's 60 s default would cut long generations
    return response


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

    def missing(agent_id: str | None, model: str) -> HttpError:
        """Why no agent can serve ``model`` (on ``agent_id`` only, if given)."""
        if agent_id is not None and registry.get(KIND, agent_id) is None:
            return agent_not_found(agent_id)
        return model_not_found(model)

    @bp.before_request
    async def admit() -> None:
        if request.path.endswith("/v1/messages"):
            cast("dict[str, Any]", request.scope)["nfrx.error_style"] = "anthropic"
        gateway.admit()

    @bp.websocket("/connect")
    async def connect() -> Response | None:
        return await serve_agent(gateway, KIND)

    @bp.get("/v1/models")
    @bp.get("/id/<agent_id>/v1/models")
    async def list_models(agent_id: str | None = None) -> dict[str, Any]:
        data = [
            model_object(gateway, model, [a.name for a in agents])
            for model, agents in sorted(model_table(agent_id).items())
        ]
        return {"object": "list", "data": data}

    @bp.get("/v1/models/<path:model_id>")
    @bp.get("/id/<agent_id>/v1/models/<path:model_id>")
    async def retrieve_model(model_id: str, agent_id: str | None = None) -> dict[str, Any]:
        agents = model_table(agent_id).get(model_id)
        if not agents:
            raise model_not_found(model_id)
        return model_object(gateway, model_id, [a.name for a in agents])

    async def relay(path: str, agent_id: str | None, style: ErrorStyle) -> Response:
        request_id = gateway.request_id()
        if agent_id is not None:
            model_table(agent_id)  # 404 at once for an unknown agent
        body = await gateway.read_body()
        payload = parse_body(body)
        model = payload["model"]
        prefix = f"/api/{KIND}" + (f"/id/{agent_id}" if agent_id else "")
        ticket = Ticket(
            kind=KIND,
            model=model,
            request_id=request_id,
            agent_id=agent_id,
            aliases=gateway.config.llm_min_score <= ALIAS_SCORE,
            missing=functools.partial(missing, agent_id, model),
        )
        job = Job(
            gateway=gateway,
            ticket=ticket,
            method="POST",
            path=path,
            headers=gateway.forwarded_headers(request_id),
            body=body,
            request_id=request_id,
            label=f"POST {prefix}/v1{path}",
            style=style,
            rewrite=rewrite_model,
        )
        cleanups = gateway.cleanups()
        cleanups.append(functools.partial(gateway.queue.abandon, ticket))
        if path == "/embeddings" and splittable(payload) is not None:
            return await run_split(job, payload, cleanups)
        if payload.get("stream") is True and gateway.config.llm_queue_events:
            grant = job.grant_now()
            if grant is None:
                # It has to wait: answer now, and tell the client where it stands meanwhile.
                return _response(
                    job.queued_event_stream(cleanups),
                    200,
                    [
                        ("Content-Type", "text/event-stream"),
                        ("Cache-Control", "no-store"),
                        ("X-Request-Id", request_id),
                    ],
                )
            exchange, head = await job.start(cleanups, grant)
        else:
            exchange, head = await job.start(cleanups, None)
        headers, event_stream = job.response_parts(exchange, head)
        return _response(job.answer(exchange, head, event_stream), head.status, headers)

    def openai_route(path: str) -> Callable[..., Awaitable[Response]]:
        async def route(agent_id: str | None = None) -> Response:
            return await relay(path, agent_id, "openai")

        return route

    async def messages(agent_id: str | None = None) -> Response:
        return await relay("/messages", agent_id, "anthropic")

    for path in RELAYED_PATHS:
        endpoint = path.strip("/").replace("/", "_")
        route = openai_route(path)
        bp.add_url_rule(f"/v1{path}", endpoint, route, methods=["POST"])
        bp.add_url_rule(f"/id/<agent_id>/v1{path}", f"id_{endpoint}", route, methods=["POST"])
    bp.add_url_rule("/v1/messages", "messages", messages, methods=["POST"])
    bp.add_url_rule("/id/<agent_id>/v1/messages", "id_messages", messages, methods=["POST"])

    return bp
