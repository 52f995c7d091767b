"""The OpenAI-style model catalogue every model-serving plugin (``llm``, ``asr``) exposes.

``GET /v1/models`` and ``/v1/models/{id}`` (and their ``/id/{agent}`` variants) list what the
connected agents of one kind serve; :meth:`ModelCatalog.missing` says why a request for a model
cannot be served (unknown model, or unknown agent on a targeted route).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from nfrx.server.dispatch_queue import Ticket
from nfrx.server.http_errors import HttpError, model_not_found
from nfrx.server.scheduler import aliases_allowed

if TYPE_CHECKING:
    from quart import Blueprint

    from nfrx.server.gateway import Gateway
    from nfrx.server.registry import AgentRecord


def agent_not_found(kind: str, agent_id: str) -> HttpError:
    return HttpError(
        404,
        "agent_not_found",
        f"no {kind} agent with id {agent_id!r} is connected",
        type="invalid_request_error",
    )


class ModelCatalog:
    def __init__(self, gateway: Gateway, kind: str) -> None:
        self.gateway = gateway
        self.registry = gateway.registry
        self.kind = kind
        self.min_score = gateway.config.llm_min_score

    def table(self, agent_id: str | None) -> dict[str, list[AgentRecord]]:
        """Model id -> agents serving it (only agent ``agent_id``, 404 if it is not connected),
        less the models the request's client key may not use."""
        if agent_id is None:
            table = self.registry.models(self.kind)
        else:
            agent = self.registry.get(self.kind, agent_id)
            if agent is None or agent.session.closed:
                raise agent_not_found(self.kind, agent_id)
            table = {model: [agent] for model in agent.models}
        keys = self.gateway.client_keys
        if keys is None:
            return table
        return {model: agents for model, agents in table.items() if keys.may_use(model)}

    def model_object(self, model: str, agents: list[AgentRecord]) -> dict[str, Any]:
        return {
            "id": model,
            "object": "model",
            "created": self.registry.model_created(self.kind, model),
            "owned_by": ",".join(sorted(a.name for a in agents)),
        }

    def missing(self, agent_id: str | None, model: str) -> HttpError:
        """Why no agent can serve ``model`` (on ``agent_id`` only, if given)."""
        if agent_id is not None and self.registry.get(self.kind, agent_id) is None:
            return agent_not_found(self.kind, agent_id)
        return model_not_found(model)

    def ticket(self, model: str, request_id: str, agent_id: str | None) -> Ticket:
        """A request for ``model`` (on agent ``agent_id`` only, if given), alias routing as
        ``LLM_MIN_SCORE`` allows. Raises 403 when the request's client key may not use it."""
        self.gateway.admit_model(model)
        return Ticket(
            kind=self.kind,
            model=model,
            request_id=request_id,
            agent_id=agent_id,
            aliases=aliases_allowed(self.min_score),
            missing=functools.partial(self.missing, agent_id, model),
        )

    def add_routes(self, bp: Blueprint) -> None:
        """The models routes, under the blueprint's prefix."""

        async def list_models(agent_id: str | None = None) -> dict[str, Any]:
            table = sorted(self.table(agent_id).items())
            return {"object": "list", "data": [self.model_object(m, a) for m, a in table]}

        async def retrieve_model(model_id: str, agent_id: str | None = None) -> dict[str, Any]:
            agents = self.table(agent_id).get(model_id)
            if not agents:
                raise model_not_found(model_id)
            return self.model_object(model_id, agents)

        for prefix in ("", "/id/<agent_id>"):
            bp.add_url_rule(f"{prefix}/v1/models", view_func=list_models, methods=["GET"])
            bp.add_url_rule(
                f"{prefix}/v1/models/<path:model_id>", view_func=retrieve_model, methods=["GET"]
            )
