"""The LLM plugin, server side: OpenAI-compatible routes under ``/api/llm``.

``/api/llm/connect`` is the WebSocket ``nfrx llm`` agents dial; ``/api/llm/v1/...`` are the routes
OpenAI clients call. Request bodies are forwarded byte for byte; the server parses them only to
read ``model`` (for routing) and to reject what no backend could accept.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from nfrx.config.checks import QUEUE_EVENT_STYLES
from nfrx.plugins.llm.embeddings import run_split, splittable
from nfrx.server.agent_socket import serve_agent
from nfrx.server.catalog import ModelCatalog
from nfrx.server.gateway import header, use_error_style
from nfrx.server.http_errors import HttpError
from nfrx.server.proxy import Job, streaming_response

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nfrx.server.gateway import Gateway
    from nfrx.server.http_errors import ErrorStyle

KIND = "llm"


def parse_body(body: bytes) -> dict[str, Any]:
    """An OpenAI or Anthropic request body with its ``model``; 400 with a precise reason
    otherwise."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HttpError(
            400, "invalid_json", "the request body is not valid JSON", type="invalid_request_error"
        ) from exc
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


def rewrite_model(body: bytes, model: str) -> bytes:
    payload = json.loads(body)
    payload["model"] = model
    return json.dumps(payload, ensure_ascii=False).encode()


QUEUE_EVENTS_HEADER = "X-Nfrx-Queue-Events"
"""A client's choice of ``LLM_QUEUE_EVENT_STYLE`` for its own request."""


def queue_event_style(gateway: Gateway) -> str:
    """``comments`` or ``events``: the request's ``X-Nfrx-Queue-Events`` header, else
    ``LLM_QUEUE_EVENT_STYLE``. Raises 400 for any other header value."""
    given = header(QUEUE_EVENTS_HEADER)
    if given is None:
        return gateway.config.llm_queue_event_style.lower()
    style = given.strip().lower()
    if style not in QUEUE_EVENT_STYLES:
        raise HttpError(
            400,
            "invalid_header",
            f"{QUEUE_EVENTS_HEADER} must be one of {', '.join(QUEUE_EVENT_STYLES)}, not {given!r}",
            type="invalid_request_error",
        )
    return style


RELAYED_PATHS = ("/chat/completions", "/completions", "/responses", "/embeddings")
"""OpenAI routes relayed as they are; each also exists under ``/api/llm/id/{agent}/v1``."""


def blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint(KIND, __name__, url_prefix=f"/api/{KIND}")
    catalog = ModelCatalog(gateway, KIND)

    @bp.before_request
    async def admit() -> None:
        if request.path.endswith("/v1/messages"):
            use_error_style("anthropic")
        gateway.admit()

    @bp.websocket("/connect")
    async def connect() -> Response | None:
        return await serve_agent(gateway, KIND)

    catalog.add_routes(bp)

    async def relay(path: str, agent_id: str | None, style: ErrorStyle) -> Response:
        request_id = gateway.request_id()
        if agent_id is not None:
            catalog.table(agent_id)  # 404 at once for an unknown agent
        body = await gateway.read_body()
        payload = parse_body(body)
        named = queue_event_style(gateway) == "events"
        model = payload["model"]
        prefix = f"/api/{KIND}" + (f"/id/{agent_id}" if agent_id else "")
        ticket = catalog.ticket(model, request_id, agent_id)
        cleanups = gateway.cleanups()
        job = Job.relay(
            gateway,
            ticket,
            path=path,
            body=body,
            label=f"POST {prefix}/v1{path}",
            cleanups=cleanups,
            style=style,
            rewrite=rewrite_model,
        )
        if path == "/embeddings" and splittable(payload) is not None:
            return await run_split(job, payload, cleanups)
        grant = None
        if payload.get("stream") is True and gateway.config.llm_queue_events:
            grant = job.grant_now()
            if grant is None:
                # It has to wait: answer now, and tell the client where it stands meanwhile.
                return streaming_response(
                    job.queued_event_stream(cleanups, named=named),
                    200,
                    [
                        ("Content-Type", "text/event-stream"),
                        ("Cache-Control", "no-store"),
                        ("X-Request-Id", request_id),
                    ],
                )
        exchange, head = await job.start(cleanups, grant)
        return job.response(exchange, head)

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
