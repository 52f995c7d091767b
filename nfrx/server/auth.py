"""Key checks (pure). Comparisons are constant-time; keys never appear in logs or errors."""

from __future__ import annotations

import hmac


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def key_matches(presented: str | None, expected: str) -> bool:
    """True when ``expected`` is empty (auth disabled) or equals ``presented``."""
    if not expected:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
