"""Choosing an agent for a request: a pure function over registry records (table-tested)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nfrx.server.registry import AgentRecord


def choose(candidates: Iterable[AgentRecord]) -> AgentRecord | None:
    """The least busy candidate with a free slot; ties go to the one idle the longest.

    Returns None when every candidate is busy, draining or not ready.
    """
    best: AgentRecord | None = None
    for agent in candidates:
        if not agent.has_capacity:
            continue
        if best is None or _load(agent) < _load(best):
            best = agent
    return best


def _load(agent: AgentRecord) -> tuple[int, int]:
    return agent.inflight, agent.dispatch_seq
