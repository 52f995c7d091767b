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
from nfrx.server.http_errors import HttpError, request_timeout
from nfrx.server.proxy import relay

if TYPE_CHECKING:
    from nfrx.server.gateway import Gateway

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
            400, "invalid_body", "the request body must be a JSON object",
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


def model_object(gateway: Gateway, model: str, owners: list[str]) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": gateway.registry.model_created(KIND, model),
        "owned_by": ",".join(sorted(owners)),
    }


def blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint(KIND, __name__, url_prefix=f"/api/{KIND}")

    @bp.before_request
    async def admit() -> None:
        gateway.admit()

    @bp.websocket("/connect")
    async def connect() -> Response | None:
        return await serve_agent(gateway, KIND)

    @bp.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        table = gateway.registry.models(KIND)
        data = [
            model_object(gateway, model, [a.name for a in agents])
            for model, agents in sorted(table.items())
        ]
        return {"object": "list", "data": data}

    @bp.get("/v1/models/<path:model_id>")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        agents = gateway.registry.models(KIND).get(model_id)
        if not agents:
            raise HttpError(
                404,
                "model_not_found",
                f"the model {model_id!r} does not exist: no connected agent serves it",
                type="invalid_request_error",
            )
        return model_object(gateway, model_id, [a.name for a in agents])

    async def relay_openai(path: str) -> Response:
        request_id = gateway.request_id()
        body = await gateway.read_body()
        model = parse_model(body)
        deadline = gateway.deadline()
        timeout = gateway.config.request_timeout
        agent = None
        with trio.CancelScope(deadline=deadline) as scope:
            agent = await gateway.acquire_agent(KIND, model)
        if agent is None or scope.cancelled_caught:
            raise request_timeout(timeout)
        return await relay(
            gateway.registry,
            agent,
            method="POST",
            path=path,
            headers=gateway.forwarded_headers(request_id),
            body=body,
            deadline=deadline,
            timeout=timeout,
            request_id=request_id,
            label=f"POST /api/llm/v1{path} model={model}",
            cleanups=gateway.cleanups(),
        )

    @bp.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await relay_openai("/chat/completions")

    return bp
