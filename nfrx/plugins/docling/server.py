"""The Docling plugin, server side: docling-serve's conversion API under ``/api/docling``.

``/api/docling/connect`` is the WebSocket ``nfrx docling`` agents dial. Conversions
(``/v1/convert/source`` with JSON, ``/v1/convert/file`` with a multipart upload, and their
``/async`` forms) are routed like LLM requests to the pseudo-model ``docling`` -- same queue,
limits, retries, drain, state and metrics, through :class:`~nfrx.server.proxy.Job` -- and their
bodies are streamed to the agent, never held whole.

Async tasks are sticky: docling-serve keeps a task on the instance that accepted it, so the server
reads the ``task_id`` of every async answer (a small JSON object) and sends the task's
``/v1/status/poll/{task_id}`` and ``/v1/result/{task_id}`` to that agent only. Those lookups take
no slot (they are cheap, and must not wait behind conversions on the agent that runs the task).
With several instances the task's agent is shared too (``gateway.cluster``): a poll on any
instance reaches it, through that instance's own tunnel to the agent.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response, request

from nfrx.server.agent_socket import serve_agent
from nfrx.server.dispatch_queue import Ticket
from nfrx.server.http_errors import HttpError
from nfrx.server.proxy import (
    AttemptFailed,
    Job,
    is_event_stream,
    open_exchange,
    relay_body,
    response_headers,
    streaming_response,
)
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nfrx.protocol import Response as ResponseHead
    from nfrx.server.gateway import Gateway
    from nfrx.server.proxy import Exchange

KIND = "docling"
MODEL = "docling"
"""The pseudo-model every Docling agent announces."""

TASKS_KEPT = 100_000
"""Most task ids remembered (the oldest are forgotten first)."""

ASYNC_ANSWER_LIMIT = 1024 * 1024
"""Largest async-submit answer read to find its task id."""

CONVERSIONS = (
    "/v1/convert/source",
    "/v1/convert/file",
    "/v1/convert/source/async",
    "/v1/convert/file/async",
)
"""docling-serve's conversion routes, relayed as they are."""


def _no_agent() -> HttpError:
    return HttpError(
        404,
        "model_not_found",
        "no docling agent is connected",
        type="invalid_request_error",
    )


def task_not_found(task_id: str) -> HttpError:
    return HttpError(
        404,
        "task_not_found",
        f"no docling task {task_id!r} is known to this server",
        type="invalid_request_error",
    )


def task_agent_gone(task_id: str, agent_id: str) -> HttpError:
    return HttpError(
        404,
        "task_agent_gone",
        f"the docling agent {agent_id!r} that accepted task {task_id!r} is no longer "
        "connected; the task is lost with it",
        type="invalid_request_error",
    )


async def _single(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def read_answer(exchange: Exchange, limit: int) -> bytes:
    """The whole (small) response body within the exchange's deadline; 502 if it fails or is
    larger than ``limit``. Finishes the exchange."""
    parts: list[bytes] = []
    size = 0
    try:
        with trio.move_on_at(exchange.deadline) as scope:
            while chunk := await exchange.stream.receive_some():
                size += len(chunk)
                if size > limit:
                    break
                parts.append(chunk)
    except (StreamReset, TunnelClosed) as exc:
        exchange.finish(failed=True)
        raise HttpError(502, "upstream_error", f"the async answer was cut: {exc}") from exc
    if scope.cancelled_caught or size > limit:
        exchange.finish(failed=True)
        raise HttpError(502, "upstream_error", "the async answer was too large or too slow")
    exchange.finish(failed=False)
    return b"".join(parts)


def task_id_of(body: bytes) -> str | None:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    task_id = payload.get("task_id") if isinstance(payload, dict) else None
    return task_id if isinstance(task_id, str) and task_id else None


def blueprint(gateway: Gateway) -> Blueprint:
    """The plugin's routes over ``gateway``, served by one :class:`DoclingRoutes`."""
    return DoclingRoutes(gateway).blueprint()


class DoclingRoutes:
    """The Docling routes (see the module docstring) and the task table they keep: task id ->
    id of the agent whose backend holds the task (at most :data:`TASKS_KEPT`, oldest forgotten
    first)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tasks: collections.OrderedDict[str, str] = collections.OrderedDict()

    def blueprint(self) -> Blueprint:
        bp = Blueprint(KIND, __name__, url_prefix=f"/api/{KIND}")
        bp.before_request(self.admit)
        bp.add_websocket("/connect", "connect", self.connect)
        for path in CONVERSIONS:
            endpoint = path.strip("/").replace("/", "_")
            view = functools.partial(self.convert, path)
            functools.update_wrapper(view, self.convert)
            bp.add_url_rule(path, endpoint, view, methods=["POST"])
        bp.add_url_rule("/v1/status/poll/<task_id>", "status_poll", self.status_poll)
        bp.add_url_rule("/v1/result/<task_id>", "result", self.result)
        return bp

    async def admit(self) -> None:
        self.gateway.admit()

    async def connect(self) -> Response | None:
        return await serve_agent(self.gateway, KIND)

    def remember(self, task_id: str, agent_id: str) -> None:
        tasks = self.tasks
        tasks[task_id] = agent_id
        tasks.move_to_end(task_id)
        while len(tasks) > TASKS_KEPT:
            tasks.popitem(last=False)

    async def task_agent(self, task_id: str) -> str | None:
        """The agent holding ``task_id``: this instance's table, else the other instances'."""
        agent_id = self.tasks.get(task_id)
        if agent_id is None:
            agent_id = await self.gateway.cluster.task_agent(task_id)
            if agent_id is not None:
                self.remember(task_id, agent_id)
        return agent_id

    async def convert(self, path: str) -> Response:
        gateway = self.gateway
        request_id = gateway.request_id()
        upload = gateway.upload()
        ticket = Ticket(kind=KIND, model=MODEL, request_id=request_id, missing=_no_agent)
        cleanups = gateway.cleanups()
        job = Job.relay(
            gateway,
            ticket,
            path=path,
            body=upload,
            label=f"POST /api/{KIND}{path}",
            cleanups=cleanups,
        )
        exchange, head = await job.start(cleanups)
        if path.endswith("/async") and not head.end:
            headers, _ = job.response_parts(exchange, head)
            body = await read_answer(exchange, ASYNC_ANSWER_LIMIT)
            task_id = task_id_of(body)
            if task_id is not None and head.status < 300:
                self.remember(task_id, exchange.agent.id)
                gateway.cluster.task_accepted(task_id, exchange.agent.id)
            return streaming_response(_single(body), head.status, headers)
        return job.response(exchange, head)

    async def status_poll(self, task_id: str) -> Response:
        return await self.task_lookup(f"/v1/status/poll/{task_id}", task_id)

    async def result(self, task_id: str) -> Response:
        return await self.task_lookup(f"/v1/result/{task_id}", task_id)

    async def task_lookup(self, path: str, task_id: str) -> Response:
        gateway = self.gateway
        request_id = gateway.request_id()
        agent_id = await self.task_agent(task_id)
        if agent_id is None:
            raise task_not_found(task_id)
        agent = gateway.registry.get(KIND, agent_id)
        if agent is None or agent.session.closed:
            raise task_agent_gone(task_id, agent_id)
        query = request.query_string.decode("latin-1")
        try:
            exchange, head = await open_exchange(
                gateway,
                agent,
                MODEL,
                method="GET",
                path=path + (f"?{query}" if query else ""),
                headers=gateway.forwarded_headers(request_id),
                body=b"",
                deadline=trio.current_time() + gateway.config.request_timeout,
                request_id=request_id,
                label=f"GET /api/{KIND}{path}",
                cleanups=gateway.cleanups(),
                owns_slot=False,
                slot=False,
            )
        except AttemptFailed as failure:
            raise failure.error from failure
        return self.answer(exchange, head, request_id)

    def answer(self, exchange: Exchange, head: ResponseHead, request_id: str) -> Response:
        headers = response_headers(head.headers)
        headers.append(("X-Request-Id", request_id))
        if head.end:
            exchange.finish(failed=False)
            return streaming_response(_single(b""), head.status, headers)
        body = relay_body(
            exchange, is_event_stream(headers), "openai", self.gateway.config.llm_idle_timeout
        )
        return streaming_response(body, head.status, headers)
