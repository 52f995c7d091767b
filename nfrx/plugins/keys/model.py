"""What a client key is, pure: the record, its secret, its rules, and the admin's request bodies.

**Secrets.** ``nfrx-`` followed by 43 URL-safe characters: 32 bytes from :mod:`secrets`, 256 bits.
Only the SHA-256 of a secret is stored, with its first characters (:data:`PREFIX_LENGTH`) for
people to tell keys apart. A plain, unsalted SHA-256 is enough here, and it is cheap enough to
run on every request: salts and slow hashes (bcrypt, Argon2) protect secrets people choose, which
can be guessed; a 256-bit random secret cannot be guessed, and a stolen table of digests gives no
way back to a secret. A presented key is found by its digest (a dict lookup) and the digests are
then compared with :func:`hmac.compare_digest`.

**Rules.** ``models`` and ``routes`` are shell-style patterns (:func:`fnmatch.fnmatchcase`):
``["*"]`` allows everything. Routes are ``llm``, ``asr``, ``docling``, ``jobs`` (the jobs and
transfer APIs) and ``mcp:<relay id>``; ``mcp`` alone means every relay. A limit of None is no
limit. A key is usable while enabled, not revoked and not past ``expires_at``.

**Bodies.** :func:`parse_create` and :func:`parse_update` check an admin's JSON and raise
:class:`InvalidKey` with a message that names the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import math
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Final

import attrs

SECRET_PREFIX: Final = "nfrx-"
PREFIX_LENGTH: Final = len(SECRET_PREFIX) + 8
"""Characters of a secret kept in clear (``nfrx-`` and 8 more): enough to tell keys apart."""

ROUTE_NAMES: Final = ("llm", "asr", "docling", "jobs", "mcp")
LIMIT_NAMES: Final = (
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_day",
    "tokens_per_month",
)
MAX_LIMIT: Final = 2**53 - 1
MAX_PATTERNS: Final = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_PATTERN = re.compile(r"^[^\s\x00-\x1f]{1,200}$")

ACTIVE: Final = "active"
DISABLED: Final = "disabled"
EXPIRED: Final = "expired"
REVOKED: Final = "revoked"


class InvalidKey(ValueError):
    """An admin's request body is not a valid key (the message names the field)."""


@attrs.frozen(kw_only=True)
class Limits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    def view(self) -> dict[str, int | None]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class ClientKey:
    """A client key as stored: everything but its secret, of which only the digest is kept."""

    id: str
    name: str
    prefix: str
    digest: str
    """Hex SHA-256 of the secret."""
    created_at: float
    updated_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    enabled: bool = True
    models: tuple[str, ...] = ("*",)
    routes: tuple[str, ...] = ("*",)
    limits: Limits = Limits()

    def status(self, now: float) -> str:
        """``revoked``, ``expired``, ``disabled`` or ``active``, in that order."""
        if self.revoked_at is not None:
            return REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return EXPIRED
        if not self.enabled:
            return DISABLED
        return ACTIVE

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def allows_route(self, route: str) -> bool:
        """``route`` is ``llm``, ``asr``, ``docling``, ``jobs`` or ``mcp:<relay id>``."""
        for pattern in self.routes:
            if pattern == "mcp":
                pattern = "mcp:*"
            if fnmatch.fnmatchcase(route, pattern):
                return True
        return False

    def matches(self, digest: str) -> bool:
        return hmac.compare_digest(self.digest, digest)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_id() -> str:
    return "key_" + secrets.token_hex(6)


def rfc3339(timestamp: float | None) -> str | None:
    """UTC, second precision, ``Z`` suffix; None stays None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_view(key: ClientKey, now: float) -> dict[str, Any]:
    """The key as the admin API and the state show it: never the secret, nor its digest."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "status": key.status(now),
        "enabled": key.enabled,
        "created_at": rfc3339(key.created_at),
        "updated_at": rfc3339(key.updated_at),
        "expires_at": rfc3339(key.expires_at),
        "revoked_at": rfc3339(key.revoked_at),
        "models": list(key.models),
        "routes": list(key.routes),
        "limits": key.limits.view(),
    }


# -- the admin's request bodies ------------------------------------------------------------------

CREATE_FIELDS: Final = frozenset(
    {"name", "expires_at", "expires_in", "enabled", "models", "routes", "limits"}
)
UPDATE_FIELDS: Final = CREATE_FIELDS


def _fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidKey(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(allowed))})")


def parse_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidKey(
            "'name' must be 1 to 64 letters, digits or . _ @ + -, starting with a letter or digit"
        )
    return value


def _patterns(body: dict[str, Any], field: str, check_route: bool) -> tuple[str, ...]:
    value = body[field]
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if (
        not isinstance(value, list)
        or len(value) > MAX_PATTERNS
        or not all(isinstance(item, str) and _PATTERN.match(item) for item in value)
    ):
        raise InvalidKey(f"'{field}' must be a list of at most {MAX_PATTERNS} patterns (no spaces)")
    if check_route:
        for item in value:
            if not _is_route(item):
                raise InvalidKey(
                    f"'routes': {item!r} is not a route (llm, asr, docling, jobs, mcp, "
                    "mcp:<relay id>, or *)"
                )
    return tuple(dict.fromkeys(value))


def _is_route(pattern: str) -> bool:
    """``*``, a route name, or ``mcp:<relay id pattern>``."""
    base, colon, _ = pattern.partition(":")
    if colon:
        return base == "mcp"
    return pattern == "*" or pattern in ROUTE_NAMES


def _limits(value: object, base: Limits) -> Limits:
    if not isinstance(value, dict):
        raise InvalidKey("'limits' must be an object")
    unknown = sorted(set(value) - set(LIMIT_NAMES))
    if unknown:
        raise InvalidKey(f"unknown limit {unknown[0]!r} (limits: {', '.join(LIMIT_NAMES)})")
    changes: dict[str, int | None] = {}
    for name, limit in value.items():
        if limit is not None and (type(limit) is not int or not 0 < limit <= MAX_LIMIT):
            raise InvalidKey(f"'limits.{name}' must be a positive integer or null (no limit)")
        changes[name] = limit
    return attrs.evolve(base, **changes)


def _expiry(body: dict[str, Any], now: float) -> float | None:
    if "expires_in" in body and "expires_at" in body:
        raise InvalidKey("give 'expires_at' or 'expires_in', not both")
    if "expires_in" in body:
        seconds = body["expires_in"]
        if seconds is None:
            return None
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 < seconds <= 100 * 365 * 86400
        ):
            raise InvalidKey("'expires_in' must be a positive number of seconds (or null)")
        return now + float(seconds)
    value = body["expires_at"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidKey("'expires_at' must be an RFC 3339 date-time (or null)")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidKey(f"'expires_at' is not an RFC 3339 date-time: {value!r}") from exc
    if moment.tzinfo is None:
        raise InvalidKey("'expires_at' needs a time zone (Z or +hh:mm)")
    return moment.timestamp()


def _enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidKey("'enabled' must be true or false")
    return value


def parse_create(body: dict[str, Any], now: float) -> tuple[ClientKey, str]:
    """A new key from an admin's JSON body, and its secret (never stored)."""
    _fields(body, CREATE_FIELDS)
    if "name" not in body:
        raise InvalidKey("the key needs a 'name'")
    secret = new_secret()
    key = ClientKey(
        id=new_id(),
        name=parse_name(body["name"]),
        prefix=secret[:PREFIX_LENGTH],
        digest=digest_of(secret),
        created_at=now,
        updated_at=now,
    )
    return parse_update(body, key, now, creating=True), secret


def parse_update(
    body: dict[str, Any], key: ClientKey, now: float, *, creating: bool = False
) -> ClientKey:
    """``key`` with the fields an admin's JSON body changes (absent fields stay as they are)."""
    _fields(body, UPDATE_FIELDS)
    changes: dict[str, Any] = {}
    if "name" in body and not creating:
        changes["name"] = parse_name(body["name"])
    if "expires_in" in body or "expires_at" in body:
        changes["expires_at"] = _expiry(body, now)
    if "enabled" in body:
        changes["enabled"] = _enabled(body["enabled"])
    if "models" in body:
        changes["models"] = _patterns(body, "models", check_route=False)
    if "routes" in body:
        changes["routes"] = _patterns(body, "routes", check_route=True)
    if "limits" in body:
        changes["limits"] = _limits(body["limits"], key.limits)
    if not creating:
        changes["updated_at"] = now
    return attrs.evolve(key, **changes)
