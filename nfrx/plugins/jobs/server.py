"""The jobs API, server side: ``/api/jobs`` routes over :class:`~.service.JobsService`.

Client routes (create, get, events, cancel) take the API key; worker routes (claim, the claim
stream, payload, result, status, heartbeat) the client key (:mod:`nfrx.plugins.transfer.access`).
Bodies and answers are the original nfrx's, errors its flat ``{"error": "<code>"}`` with a
``message`` added. What this server adds: the claim's lease (``lease_token``), which the worker
sends back on every post as the ``X-Nfrx-Lease`` header or a ``lease_token`` field (403
``lease_mismatch`` otherwise); ``POST /api/jobs/{id}/heartbeat``; ``priority``; the claim
stream's ``max_active`` and its ``cancel`` events. Every store or transfer error becomes its HTTP
answer in one place, :func:`_translated`.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import TYPE_CHECKING, Any, Final

from quart import Blueprint, Response, jsonify, request

from nfrx.plugins.jobs.model import (
    STATUSES,
    Claimer,
    InvalidState,
    JobError,
    JobNotFound,
    JobSpec,
    LeaseMismatch,
    StoreFull,
    StoreUnavailable,
    job_view,
)
from nfrx.plugins.transfer.access import authorize, refuse_head
from nfrx.plugins.transfer.channels import TransferError, rfc3339_seconds
from nfrx.plugins.transfer.server import http_error
from nfrx.server.gateway import header, use_error_style
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nfrx.plugins.jobs.service import JobsService
    from nfrx.server.gateway import Gateway

LEASE_HEADER: Final = "X-Nfrx-Lease"

MAX_NUMBER: Final = 2**31 - 1
"""Bound of ``priority`` and ``max_wait_seconds`` (a store may pack a priority into a score)."""

MAX_BODY: Final = 64 * 1024
"""Largest JSON body of a jobs route, in bytes (metadata and progress are kept in memory, for
every job: payloads go through transfers)."""


def _bad(code: str, message: str) -> HttpError:
    return HttpError(400, code, message)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Store and transfer errors as their HTTP answers."""
    try:
        yield
    except JobNotFound as exc:
        raise HttpError(
            404, "not_found", "no such job (unknown, or forgotten after JOBS_RETENTION)"
        ) from exc
    except InvalidState as exc:
        raise HttpError(409, "invalid_state", str(exc)) from exc
    except LeaseMismatch as exc:
        raise HttpError(403, "lease_mismatch", str(exc)) from exc
    except StoreFull as exc:
        raise HttpError(503, "too_many_jobs", str(exc), headers={"Retry-After": "5"}) from exc
    except StoreUnavailable as exc:
        raise HttpError(503, "jobs_unavailable", str(exc), headers={"Retry-After": "1"}) from exc
    except JobError as exc:  # pragma: no cover -- every kind is listed above
        raise HttpError(400, "invalid_request", str(exc)) from exc
    except TransferError as exc:
        raise http_error(exc) from exc


async def _body(*, required: bool) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty optional body). 400 ``invalid_request``
    for anything else, 413 past :data:`MAX_BODY`."""
    too_large = HttpError(413, "request_too_large", f"the body exceeds {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    data = bytearray()
    async for chunk in request.body:
        data += chunk
        if len(data) > MAX_BODY:
            raise too_large
    if not data.strip() and not required:
        return {}
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise _bad("invalid_request", "the body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise _bad("invalid_request", "the body must be a JSON object")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad("invalid_request", f"'{name}' must be a string")
    return value.strip()


def _object(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise _bad("invalid_request", f"'{name}' must be a JSON object")
    return value


def _number(body: dict[str, Any], name: str, *, integer: bool) -> float:
    """A finite number field (0 when absent), within +-:data:`MAX_NUMBER`."""
    value = body.get(name, 0)
    kinds = (int,) if integer else (int, float)
    if value is None:
        return 0
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or abs(value) > MAX_NUMBER
    ):
        kind = "an integer" if integer else "a number"
        raise _bad("invalid_request", f"'{name}' must be {kind} within +-{MAX_NUMBER}")
    return value


def _lease(body: dict[str, Any]) -> str | None:
    """The lease token the worker sent (header first), or None."""
    return header(LEASE_HEADER) or _text(body, "lease_token") or None


def _event_stream(body: AsyncIterator[bytes]) -> Response:
    response = Response(
        body,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # streams last; Quart's 60 s default would cut them
    return response


def blueprint(gateway: Gateway, service: JobsService) -> Blueprint:
    """The jobs API's routes over ``service``, served by one :class:`JobsRoutes`."""
    return JobsRoutes(gateway, service).blueprint()


class JobsRoutes:
    """The jobs API's routes (see the module docstring); the handlers run in the route's request
    context and read ``request``."""

    def __init__(self, gateway: Gateway, service: JobsService) -> None:
        self.gateway = gateway
        self.service = service

    def blueprint(self) -> Blueprint:
        bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")
        bp.before_request(self.admit)
        for rule, endpoint, method in (
            ("", "create", "POST"),
            ("/<job_id>", "get", "GET"),
            ("/<job_id>/events", "events", "GET"),
            ("/<job_id>/cancel", "cancel", "POST"),
            ("/claim", "claim", "POST"),
            ("/stream", "stream", "GET"),
            ("/<job_id>/payload", "payload", "POST"),
            ("/<job_id>/result", "result", "POST"),
            ("/<job_id>/status", "status", "POST"),
            ("/<job_id>/heartbeat", "heartbeat", "POST"),
        ):
            bp.add_url_rule(rule, endpoint, getattr(self, endpoint), methods=[method])
        return bp

    @staticmethod
    async def admit() -> None:
        use_error_style("plain")

    def client(self) -> None:
        authorize(self.gateway, api=True, client=False)

    def worker(self) -> None:
        authorize(self.gateway, api=False, client=True)

    # -- client side ---------------------------------------------------------------------------

    async def create(self) -> Response:
        self.client()
        body = await _body(required=True)
        job_type = _text(body, "type")
        if not job_type:
            raise _bad("missing_type", "the job needs a 'type'")
        spec = JobSpec(
            type=job_type,
            metadata=_object(body, "metadata"),
            priority=int(_number(body, "priority", integer=True)),
            worker_id=_text(body, "worker_id"),
            worker_group=_text(body, "worker_group"),
        )
        with _translated():
            job = await self.service.create(spec)
        return jsonify({"job_id": job.id, "status": job.status})

    async def get(self, job_id: str) -> Response:
        self.client()
        with _translated():
            job = await self.service.get(job_id)
        return jsonify(job_view(job))

    async def events(self, job_id: str) -> Response:
        self.client()
        refuse_head()
        with _translated():
            await self.service.get(job_id)  # 404 now, not an empty stream
        return _event_stream(self.service.events(job_id))

    async def cancel(self, job_id: str) -> Response:
        self.client()
        with _translated():
            job = await self.service.cancel(job_id)
        return jsonify({"status": job.status})

    # -- worker side ---------------------------------------------------------------------------

    async def claim(self) -> Response:
        self.worker()
        body = await _body(required=False)
        types = body.get("types") or []
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise _bad("invalid_request", "'types' must be a list of strings")
        max_wait = _number(body, "max_wait_seconds", integer=False)
        if max_wait < 0:
            raise _bad("invalid_request", "'max_wait_seconds' must not be negative")
        claimer = Claimer(
            worker_id=_text(body, "worker_id"),
            worker_group=_text(body, "worker_group"),
            types=frozenset(t.strip() for t in types if t.strip()),
        )
        with _translated():
            claimed = await self.service.claim(claimer, max_wait)
        if claimed is None:
            return Response(b"", status=204)
        return jsonify(claimed.view())

    async def stream(self) -> Response:
        self.worker()
        refuse_head()
        args = request.args
        types = {t.strip() for value in args.getlist("types") for t in value.split(",")}
        try:
            max_active = int(args.get("max_active", "0"))
        except ValueError:
            max_active = -1
        if max_active < 0:
            raise _bad("invalid_request", "'max_active' must be a whole number, 0 or more")
        claimer = Claimer(
            worker_id=args.get("worker_id", "").strip(),
            worker_group=args.get("worker_group", "").strip(),
            types=frozenset(types - {""}),
        )
        return _event_stream(self.service.claim_stream(claimer, max_active))

    async def offer(self, job_id: str, kind: str) -> Response:
        self.worker()
        body = await _body(required=False)
        key = body.get("key", kind)
        if not isinstance(key, str):
            raise _bad("invalid_request", "'key' must be a string")
        properties = _object(body, "properties")
        with _translated():
            info = await self.service.offer_transfer(
                job_id, _lease(body), kind, key.strip(), properties
            )
        answer: dict[str, Any] = {
            "key": info.key,
            "channel_id": info.channel_id,
            "reader_url" if kind == "payload" else "writer_url": info.url,
            "expires_at": rfc3339_seconds(info.expires_at),
        }
        if properties:
            answer["properties"] = properties
        return jsonify(answer)

    async def payload(self, job_id: str) -> Response:
        return await self.offer(job_id, "payload")

    async def result(self, job_id: str) -> Response:
        return await self.offer(job_id, "result")

    async def status(self, job_id: str) -> Response:
        self.worker()
        body = await _body(required=True)
        state = _text(body, "state")
        if not state:
            raise _bad("missing_state", "the body needs a 'state'")
        if state not in STATUSES:
            raise _bad("unknown_state", f"'state' must be one of {', '.join(STATUSES)}")
        error = _object(body, "error")
        if error is not None and not all(
            isinstance(error.get(k, ""), str) for k in ("code", "message")
        ):
            raise _bad("invalid_request", '\'error\' must be {"code": str, "message": str}')
        with _translated():
            job = await self.service.set_status(
                job_id,
                _lease(body),
                state,
                progress=_object(body, "progress"),
                error=None if error is None else {k: error.get(k, "") for k in ("code", "message")},
            )
        return jsonify({"status": job.status})

    async def heartbeat(self, job_id: str) -> Response:
        self.worker()
        body = await _body(required=False)
        with _translated():
            job, lease_end = await self.service.heartbeat(job_id, _lease(body))
        return jsonify({"status": job.status, "lease_expires_at": rfc3339_seconds(lease_end)})
