"""Which agents each instance has, and the fleet view ``/api/state`` shows on any instance.

Every instance writes its agents' state entries (the ``/api/state`` agent objects, plus their
``kind``) to Redis with each heartbeat; every instance reads the others'. The result,
:class:`Fleet`, is a value the state snapshot reads as it is (no Redis call while a snapshot is
built). :func:`merge_agents` is the pure function that turns this instance's agents and the
others' into one list: each agent once, with the instances it holds a tunnel to, its in-flight
requests and totals summed over them.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

SUMMED: Final = (
    "inflight",
    "processed_total",
    "failures_total",
    "cancelled_total",
    "processing_ms_total",
    "input_tokens_total",
    "output_tokens_total",
)
"""Agent fields that add up over the instances (each instance counts its own streams)."""


@attrs.frozen(kw_only=True)
class InstanceView:
    """One instance of the gateway, as the last heartbeat read it."""

    id: str
    url: str
    started_at: float
    draining: bool
    version: str
    agents: tuple[dict[str, Any], ...]
    """Its agents' state entries (with ``kind``); empty for this instance (read live)."""
    this: bool = False


@attrs.frozen(kw_only=True)
class Fleet:
    """The gateway's instances as this one last saw them."""

    instance_id: str
    instances: tuple[InstanceView, ...]
    degraded: bool
    queued_elsewhere: int
    """Requests waiting on the other instances."""

    def attached(self, instance: str, kind: str, agent_id: str) -> bool:
        """Does that agent hold a tunnel to ``instance`` (as that instance last published)?"""
        for view in self.instances:
            if view.id == instance:
                return any(a.get("kind") == kind and a.get("id") == agent_id for a in view.agents)
        return False

    def document(self) -> list[dict[str, Any]]:
        """The ``instances`` list of ``/api/state``."""
        return [
            {
                "id": view.id,
                "url": view.url,
                "state": _instance_state(view, self.degraded),
                "version": view.version,
                "started_at": view.started_at,
                "this": view.this,
            }
            for view in self.instances
        ]


def _instance_state(view: InstanceView, degraded: bool) -> str:
    if view.draining:
        return "draining"
    if view.this and degraded:
        return "degraded"
    return "ready"


def merge_agents(
    kind: str, local: list[dict[str, Any]], fleet: Fleet | None
) -> list[dict[str, Any]]:
    """This instance's agent entries of ``kind`` merged with the other instances' (pure).

    Each agent appears once: this instance's entry when it has one (else the first other's),
    with ``instances`` (ids, sorted) and the :data:`SUMMED` fields added up; an agent busy on any
    instance is ``working``.
    """
    if fleet is None:
        return local
    this = fleet.instance_id
    merged: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for entry in local:
        merged[entry["id"]] = {**entry, "instances": [this]}
        order.append(entry["id"])
    for view in fleet.instances:
        if view.this:
            continue
        for entry in view.agents:
            if entry.get("kind") != kind or not isinstance(entry.get("id"), str):
                continue
            known = merged.get(entry["id"])
            if known is None:
                known = merged[entry["id"]] = {
                    **{k: v for k, v in entry.items() if k != "kind"},
                    "instances": [],
                }
                order.append(entry["id"])
                for name in SUMMED:
                    known[name] = 0
            for name in SUMMED:
                value = entry.get(name, 0)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    known[name] = known.get(name, 0) + value
            known["instances"].append(view.id)
    out = []
    for agent_id in order:
        entry = merged[agent_id]
        entry["instances"] = sorted(entry["instances"])
        finished = entry["processed_total"] + entry["failures_total"] + entry["cancelled_total"]
        entry["processing_ms_total"] = round(entry["processing_ms_total"], 3)
        entry["avg_processing_ms"] = (
            round(entry["processing_ms_total"] / finished, 3) if finished else 0.0
        )
        if entry.get("status") == "idle" and entry["inflight"] > 0:
            entry["status"] = "working"
        out.append(entry)
    return out
