"""Embeddings with an ``input`` array: split across agents, run in parallel, merged in order.

The request first gets one agent like any other (queueing if every agent serving the model is
busy); then it also takes whichever other eligible agents are free right now, up to
``LLM_MAX_PARALLEL_EMBEDDINGS`` and one per input. Each agent pulls batches from a shared cursor:
at most its own ``EMBEDDING_BATCH_SIZE`` inputs (declared at hello; 0 = no limit) and at most a
fair share, so a fast agent simply takes more batches. An agent whose attempt fails before it
answered (it died, drained, or its backend is unreachable) puts its batch back for the others and
stops; if no agent is left, the request gets another one (retry budget ``LLM_MAX_RETRIES``; an
agent that was only full -- ``overloaded``, other instances took its slots -- spends none). A
backend answering an error status fails the whole request with that status and body.

The merged answer lists every embedding in input order with ``index`` renumbered ``0..n-1`` and
``usage`` summed. When one batch covers everything (a single agent without a batch limit) the
request and the answer pass through byte for byte, as for any other route.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response
from werkzeug.datastructures import Headers

from nfrx.protocol import ResetCode
from nfrx.server.http_errors import HttpError, from_tunnel_error
from nfrx.server.proxy import AttemptFailed, response_headers
from nfrx.server.scheduler import choose_match
from nfrx.server.usage import Usage
from nfrx.transport.errors import StreamReset, TunnelClosed

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.server.proxy import Exchange, Job
    from nfrx.server.registry import AgentRecord

log = logging.getLogger("nfrx.proxy")

MAX_RESPONSE_BYTES = 512 * 1024 * 1024
"""Largest embeddings answer one batch may return (float vectors are big, but not unbounded)."""


def splittable(payload: dict[str, Any]) -> list[Any] | None:
    """The inputs of an embeddings request worth splitting (a list of two or more), else None."""
    inputs = payload.get("input")
    if isinstance(inputs, list) and len(inputs) > 1:
        return inputs
    return None


def batch_size(agent_limit: int, share: int) -> int:
    """How many inputs an agent takes at a time: its own limit, and no more than a fair share."""
    return min(agent_limit, share) if agent_limit > 0 else share


class _UpstreamAnswer(Exception):
    """A batch came back with an error status: the client gets it as it is."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


@attrs.define(eq=False)
class _Plan:
    """The inputs and what has become of them."""

    inputs: list[Any]
    share: int
    pending: list[range] = attrs.field(factory=list)
    """Batches handed back by a failed agent; taken before new ones."""
    cursor: int = 0
    results: dict[int, list[Any]] = attrs.field(factory=dict)
    """Start index -> the ``data`` items of the batch that began there."""
    done: int = 0
    model: str | None = None
    prompt_tokens: int = 0
    total_tokens: int = 0

    def take(self, limit: int) -> range | None:
        if self.pending:
            whole = self.pending.pop(0)
            if len(whole) > limit:
                self.pending.insert(0, range(whole.start + limit, whole.stop))
                return range(whole.start, whole.start + limit)
            return whole
        if self.cursor >= len(self.inputs):
            return None
        start = self.cursor
        self.cursor = min(len(self.inputs), start + limit)
        return range(start, self.cursor)

    @property
    def finished(self) -> bool:
        return self.done == len(self.inputs)


async def run_split(
    job: Job, payload: dict[str, Any], cleanups: list[Callable[[], None]]
) -> Response:
    """Answer an embeddings request whose ``input`` :func:`splittable` returned."""
    inputs = payload["input"]
    grant = job.grant_now()
    while grant is None:
        grant = await job.wait()
    agents = _with_free_agents(job, grant, len(inputs))
    plan = _Plan(inputs, share=math.ceil(len(inputs) / len(agents)))
    single = len(agents) == 1 and batch_size(agents[0][0].embedding_batch_size, plan.share) >= len(
        inputs
    )
    if single:
        # One batch covers it all: relay the request and its answer untouched.
        exchange, head = await job.start(cleanups, grant)
        return job.response(exchange, head)
    while True:
        fatal, last_error, busy = await _run_agents(job, payload, plan, agents, cleanups)
        if isinstance(fatal, _UpstreamAnswer):
            headers = [(k, v) for k, v in fatal.headers if k.lower() != "content-length"]
            headers.append(("X-Request-Id", job.request_id))
            return Response(fatal.body, status=fatal.status, headers=Headers(headers))
        if fatal is not None:
            raise fatal
        if plan.finished:
            break
        if last_error is None and busy:
            # Every agent was merely full: back in line, first, without spending a retry.
            grant = job.retry_grant()
            while grant is None:
                grant = await job.wait()
            agents = [grant]
            continue
        assert last_error is not None
        if job.retries_left <= 0:
            raise last_error
        job.retries_left -= 1
        job.ticket.exclude = job.ticket.exclude | {a.id for a, _ in agents}
        job.ticket.missing = functools.partial(_same, last_error)
        grant = job.retry_grant()
        while grant is None:
            grant = await job.wait()
        agents = [grant]
    return _merged(job, plan)


def _with_free_agents(
    job: Job, grant: tuple[AgentRecord, str], inputs: int
) -> list[tuple[AgentRecord, str]]:
    """The granted agent and every other eligible agent free right now (their slots taken), up
    to ``LLM_MAX_PARALLEL_EMBEDDINGS`` and one per input."""
    registry = job.gateway.registry
    agents = [grant]
    limit = min(job.gateway.config.llm_max_parallel_embeddings, inputs)
    while len(agents) < limit:
        taken = {a.id for a, _ in agents}
        found = [m for m in job.ticket.candidates(registry) if m[0].id not in taken]
        extra = choose_match(found)
        if extra is None:
            break
        registry.acquire(extra[0])
        agents.append(extra)
    return agents


async def _run_agents(
    job: Job,
    payload: dict[str, Any],
    plan: _Plan,
    agents: list[tuple[AgentRecord, str]],
    cleanups: list[Callable[[], None]],
) -> tuple[HttpError | _UpstreamAnswer | None, HttpError | None, bool]:
    """Let every agent pull batches until the plan is done or they all dropped out.

    Returns the failure that ends the request, if any (an upstream error answer, or a relay
    error that a retry cannot fix), the last error that another agent might overcome, and
    whether an agent dropped out only because it was full (``overloaded``).
    """
    fatal: list[HttpError | _UpstreamAnswer] = []
    retryable: list[HttpError] = []
    busy: list[AgentRecord] = []

    async def worker(agent: AgentRecord, concrete: str) -> None:
        failed = cancelled = refused = False
        try:
            while (
                batch := plan.take(batch_size(agent.embedding_batch_size, plan.share))
            ) is not None:
                try:
                    await _run_batch(job, payload, plan, agent, concrete, batch, cleanups)
                except AttemptFailed as exc:
                    plan.pending.insert(0, batch)
                    if exc.busy:
                        refused = True
                        busy.append(agent)
                        return
                    failed = True
                    if exc.retryable:
                        retryable.append(exc.error)
                        return
                    fatal.append(exc.error)
                    nursery.cancel_scope.cancel()
                    return
                except _UpstreamAnswer as exc:
                    failed = True
                    fatal.append(exc)
                    nursery.cancel_scope.cancel()
                    return
        except trio.Cancelled:
            # The client left (or another agent's failure ended the request): not this
            # agent's failure.
            cancelled = not failed
            raise
        finally:
            job.gateway.registry.release(
                agent, failed=failed, cancelled=cancelled, counted=not refused
            )

    async with trio.open_nursery() as nursery:
        for agent, concrete in agents:
            nursery.start_soon(worker, agent, concrete)
    return (fatal[0] if fatal else None), (retryable[-1] if retryable else None), bool(busy)


async def _run_batch(
    job: Job,
    payload: dict[str, Any],
    plan: _Plan,
    agent: AgentRecord,
    concrete: str,
    batch: range,
    cleanups: list[Callable[[], None]],
) -> None:
    body = json.dumps(
        {**payload, "model": concrete, "input": plan.inputs[batch.start : batch.stop]},
        ensure_ascii=False,
    ).encode()
    exchange, head = await job.open(
        agent,
        concrete,
        body,
        cleanups,
        note=f" inputs={batch.start}..{batch.stop - 1}",
        owns_slot=False,
    )
    data = await _read_all(exchange, job)
    if head.status != 200:
        raise _UpstreamAnswer(head.status, response_headers(head.headers), data)
    try:
        answer = json.loads(data)
        items = answer["data"]
        if not isinstance(items, list) or len(items) != len(batch):
            raise ValueError(f"{len(items)} embeddings for {len(batch)} inputs")
        items.sort(key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise AttemptFailed(
            HttpError(502, "upstream_error", f"the backend's embeddings answer is unusable: {exc}"),
            retryable=False,
        ) from exc
    plan.results[batch.start] = items
    plan.done += len(batch)
    if plan.model is None and isinstance(answer.get("model"), str):
        plan.model = answer["model"]
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    prompt, total = (_count(usage.get(key)) for key in ("prompt_tokens", "total_tokens"))
    plan.prompt_tokens += prompt
    plan.total_tokens += total
    exchange.usage = Usage(input_tokens=prompt)
    exchange.finish(failed=False)


def _same(error: HttpError) -> HttpError:
    return error


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


async def _read_all(exchange: Exchange, job: Job) -> bytes:
    """The whole answer of one batch, within the deadline and the idle timeout."""
    idle = job.gateway.config.llm_idle_timeout
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            with trio.move_on_at(min(job.deadline, trio.current_time() + idle)) as scope:
                chunk = await exchange.stream.receive_some()
        except (StreamReset, TunnelClosed) as exc:
            # Nothing has reached the client yet, so the batch can still go elsewhere.
            exchange.finish(failed=True)
            detail = from_tunnel_error(exc, job.request_id).detail
            log.warning(
                "%s: agent %s failed mid-answer: %s request_id=%s",
                exchange.label,
                exchange.agent.name,
                detail,
                job.request_id,
            )
            message = f"the agent failed mid-answer (request id {job.request_id})"
            raise AttemptFailed(
                HttpError(502, "upstream_error", message, detail=detail), retryable=True
            ) from exc
        if scope.cancelled_caught:
            exchange.finish(code=ResetCode.TIMEOUT, failed=True)
            raise AttemptFailed(
                HttpError(504, "timeout", "an embeddings batch did not complete in time"),
                retryable=False,
            )
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            exchange.finish(failed=True)
            raise AttemptFailed(
                HttpError(502, "upstream_error", "an embeddings batch answer is too large"),
                retryable=False,
            )
        parts.append(chunk)


def _merged(job: Job, plan: _Plan) -> Response:
    data: list[Any] = []
    for start in sorted(plan.results):
        data.extend(plan.results[start])
    for index, item in enumerate(data):
        if isinstance(item, dict):
            item["index"] = index
    body = {
        "object": "list",
        "data": data,
        "model": plan.model or job.ticket.model,
        "usage": {"prompt_tokens": plan.prompt_tokens, "total_tokens": plan.total_tokens},
    }
    return Response(
        json.dumps(body, ensure_ascii=False),
        status=200,
        headers=Headers({"Content-Type": "application/json", "X-Request-Id": job.request_id}),
    )
