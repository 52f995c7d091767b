"""Exception groups, read for people: the leaf exceptions behind a group."""

from __future__ import annotations


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, groups flattened at any depth, in order (``[exc]`` itself
    when it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
