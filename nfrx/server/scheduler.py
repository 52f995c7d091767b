"""Choosing an agent for a request: pure functions over registry records (table-tested).

Matching follows the original nfrx: an agent serving the exact model wins; otherwise, when
aliasing is on, an agent serving another quantization of the same model and size does (alias key
``name:size`` from ``^([^:]+):([^-\\s]+)(-.+)?$``, so ``llama3:8b-q4_0`` and ``llama3:8b`` share
``llama3:8b``). Among matches with a free slot the least busy wins; ties go to the agent idle the
longest, which spreads equal load round-robin. An agent's load counts the slots other instances'
streams hold on it (:attr:`~nfrx.server.registry.AgentRecord.load`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nfrx.server.registry import AgentRecord

_ALIAS = re.compile(r"^([^:]+):([^-\s]+)(-.+)?$")


ALIAS_SCORE = 0.5
"""The original's score for an alias match: ``LLM_MIN_SCORE`` above it turns aliasing off."""


def aliases_allowed(min_score: float) -> bool:
    return min_score <= ALIAS_SCORE


def alias_key(model: str) -> str | None:
    """``name:size`` of a model id, or None when it has no such shape."""
    match = _ALIAS.match(model)
    return f"{match.group(1)}:{match.group(2)}" if match else None


def matches(
    agents: Iterable[AgentRecord], model: str, *, aliases: bool
) -> list[tuple[AgentRecord, str, bool]]:
    """``(agent, the agent's own model id, exact?)`` for every agent that can serve ``model``."""
    key = alias_key(model) if aliases else None
    found: list[tuple[AgentRecord, str, bool]] = []
    for agent in agents:
        if model in agent.models:
            found.append((agent, model, True))
        elif key is not None:
            concrete = next((m for m in agent.models if alias_key(m) == key), None)
            if concrete is not None:
                found.append((agent, concrete, False))
    return found


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


def choose_match(
    found: list[tuple[AgentRecord, str, bool]],
) -> tuple[AgentRecord, str] | None:
    """Exact matches with a free slot first, then alias matches; None if all are busy."""
    for exact in (True, False):
        agent = choose(a for a, _, is_exact in found if is_exact is exact)
        if agent is not None:
            concrete = next(m for a, m, _ in found if a is agent)
            return agent, concrete
    return None


def _load(agent: AgentRecord) -> tuple[int, int]:
    return agent.load, agent.dispatch_seq
