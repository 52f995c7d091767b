"""The LLM plugin, server side: OpenAI-compatible routes under ``/api/llm``.

``/api/llm/connect`` is the WebSocket ``nfrx llm`` agents dial; ``/api/llm/v1/...`` are the routes
OpenAI clients call. Request bodies are forwarded byte for byte; the server parses them only to
read ``model`` (for routing) and to reject what no backend could accept.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response

from nfrx.server.agent_socket import serve_agent
from nfrx.server.http_errors import HttpError, model_not_found, request_timeout
from nfrx.server.proxy import relay

if TYPE_CHECKING:
    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord

KIND = "llm"


def parse_model(body: bytes) -> str:
    """The ``model`` of an OpenAI request body; 400 with a precise reason otherwise."""
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
    return model


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

    @bp.before_request
    async def admit() -> None:
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

    async def relay_openai(path: str, agent_id: str | None) -> Response:
        request_id = gateway.request_id()
        if agent_id is not None:
            model_table(agent_id)  # 404 at once for an unknown agent
        body = await gateway.read_body()
        model = parse_model(body)
        deadline = gateway.deadline()
        timeout = gateway.config.request_timeout
        chosen = None
        with trio.CancelScope(deadline=deadline) as scope:
            chosen = await gateway.acquire_agent(
                KIND, model, agent_id=agent_id, aliases=gateway.config.llm_min_score <= ALIAS_SCORE
            )
        if chosen is None or scope.cancelled_caught:
            raise request_timeout(timeout)
        agent, concrete = chosen
        if concrete != model:
            # An alias match: the backend only knows its own name for the model.
            body = rewrite_model(body, concrete)
        prefix = f"/api/{KIND}" + (f"/id/{agent_id}" if agent_id else "")
        return await relay(
            registry,
            agent,
            method="POST",
            path=path,
            headers=gateway.forwarded_headers(request_id),
            body=body,
            deadline=deadline,
            timeout=timeout,
            request_id=request_id,
            label=f"POST {prefix}/v1{path} model={concrete}",
            cleanups=gateway.cleanups(),
        )

    for path in RELAYED_PATHS:

        async def route(agent_id: str | None = None, path: str = path) -> Response:
            return await relay_openai(path, agent_id)

        endpoint = path.strip("/").replace("/", "_")
        bp.add_url_rule(f"/v1{path}", endpoint, route, methods=["POST"])
        bp.add_url_rule(f"/id/<agent_id>/v1{path}", f"id_{endpoint}", route, methods=["POST"])

    return bp
