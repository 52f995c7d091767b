"""Leaves of exception groups (the reasons ``nfrx serve`` and agents print for a failed bind)."""

from __future__ import annotations

from nfrx.exception_groups import leaves


def test_a_plain_exception_is_its_own_leaf() -> None:
    error = OSError("in use")
    assert leaves(error) == [error]


def test_nested_groups_are_flattened_in_order() -> None:
    first, second, third = OSError("a"), OSError("b"), ValueError("c")
    group = ExceptionGroup("outer", [first, ExceptionGroup("inner", [second, third])])
    assert leaves(group) == [first, second, third]
