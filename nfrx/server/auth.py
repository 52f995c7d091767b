"""Key and role checks (pure). Comparisons are constant-time; keys never appear in logs or errors.

Roles come from the ``X-User-Roles`` header (comma-separated). The server cannot tell who set it:
``API_HTTP_ROLES`` / ``CLIENT_HTTP_ROLES`` are only safe behind a trusted reverse proxy that sets
the header itself and strips any value a client sent.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


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


def roles_match(header: str | None, allowed: Sequence[str]) -> bool:
    """True when the ``X-User-Roles`` value ``header`` names one of the roles ``allowed``."""
    granted = set(allowed)
    if not granted or not header:
        return False
    return any(role.strip() in granted for role in header.split(","))


def authorized(token: str | None, key: str, roles_header: str | None, roles: Sequence[str]) -> bool:
    """The presented bearer ``token`` equals ``key``, or ``roles_header`` holds one of ``roles``.

    With neither a key nor roles configured, everything is allowed.
    """
    if not key and not roles:
        return True
    if key and key_matches(token, key):
        return True
    return roles_match(roles_header, roles)
