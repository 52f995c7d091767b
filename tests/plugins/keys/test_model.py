"""What a client key is: its secret and digest, its rules, and the admin's bodies checked field
by field (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nfrx.plugins.keys.model import (
    ACTIVE,
    DISABLED,
    EXPIRED,
    PREFIX_LENGTH,
    REVOKED,
    SECRET_PREFIX,
    ClientKey,
    InvalidKey,
    Limits,
    digest_of,
    key_view,
    parse_create,
    parse_update,
)

NOW = datetime(2026, 5, 17, 12, 0, tzinfo=UTC).timestamp()


def test_a_new_key_keeps_only_a_digest_and_a_prefix_of_its_secret() -> None:
    key, secret = parse_create({"name": "alice"}, NOW)
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret) == len(SECRET_PREFIX) + 43  # 32 random bytes, URL-safe base64
    assert key.prefix == secret[:PREFIX_LENGTH]
    assert key.digest == digest_of(secret) != secret
    assert key.matches(digest_of(secret))
    assert not key.matches(digest_of(secret + "x"))
    view = key_view(key, NOW)
    assert secret not in str(view)
    assert key.digest not in str(view)
    assert view["status"] == ACTIVE
    assert view["models"] == ["*"]
    assert view["routes"] == ["*"]
    assert view["limits"] == {
        "requests_per_minute": None,
        "tokens_per_minute": None,
        "tokens_per_day": None,
        "tokens_per_month": None,
    }


def test_two_keys_never_share_a_secret_or_an_id() -> None:
    made = [parse_create({"name": f"k{i}"}, NOW) for i in range(50)]
    assert len({secret for _, secret in made}) == 50
    assert len({key.id for key, _ in made}) == 50


def test_every_field_is_read() -> None:
    key, _ = parse_create(
        {
            "name": "team-a",
            "models": ["llama3*", "qwen2.5:7b"],
            "routes": "llm, mcp:files-*, jobs",
            "limits": {"requests_per_minute": 10, "tokens_per_day": 5000},
            "expires_at": "2026-06-01T00:00:00Z",
            "enabled": False,
        },
        NOW,
    )
    assert key.models == ("llama3*", "qwen2.5:7b")
    assert key.routes == ("llm", "mcp:files-*", "jobs")
    assert key.limits == Limits(requests_per_minute=10, tokens_per_day=5000)
    assert key.expires_at == datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    assert key.status(NOW) == DISABLED


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "the key needs a 'name'"),
        ({"name": ""}, "'name' must be 1 to 64"),
        ({"name": "has space"}, "'name' must be 1 to 64"),
        ({"name": "x" * 65}, "'name' must be 1 to 64"),
        ({"name": "a", "secret": "mine"}, "unknown field 'secret'"),
        ({"name": "a", "models": "a b"}, "'models' must be a list"),
        ({"name": "a", "models": [1]}, "'models' must be a list"),
        ({"name": "a", "routes": ["chat"]}, "'routes': 'chat' is not a route"),
        ({"name": "a", "routes": ["llm:x"]}, "'routes': 'llm:x' is not a route"),
        ({"name": "a", "limits": []}, "'limits' must be an object"),
        ({"name": "a", "limits": {"rpm": 1}}, "unknown limit 'rpm'"),
        ({"name": "a", "limits": {"tokens_per_day": 0}}, "'limits.tokens_per_day' must be"),
        ({"name": "a", "limits": {"tokens_per_day": 1.5}}, "'limits.tokens_per_day' must be"),
        ({"name": "a", "limits": {"tokens_per_day": True}}, "'limits.tokens_per_day' must be"),
        ({"name": "a", "expires_at": "tomorrow"}, "'expires_at' is not an RFC 3339"),
        ({"name": "a", "expires_at": "2026-06-01T00:00:00"}, "needs a time zone"),
        ({"name": "a", "expires_in": -5}, "'expires_in' must be a positive number"),
        ({"name": "a", "expires_in": 5, "expires_at": None}, "not both"),
        ({"name": "a", "enabled": "yes"}, "'enabled' must be true or false"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidKey, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_create(body, NOW)


def test_an_update_changes_only_what_it_names_and_null_lifts_a_limit() -> None:
    key, _ = parse_create(
        {"name": "a", "limits": {"requests_per_minute": 5, "tokens_per_day": 100}}, NOW
    )
    changed = parse_update({"limits": {"tokens_per_day": None}, "name": "b"}, key, NOW + 60)
    assert changed.limits == Limits(requests_per_minute=5)
    assert changed.name == "b"
    assert changed.updated_at == NOW + 60
    assert (changed.id, changed.digest, changed.created_at) == (key.id, key.digest, key.created_at)
    assert parse_update({"expires_in": 3600}, key, NOW).expires_at == NOW + 3600
    assert parse_update({"expires_at": None}, changed, NOW).expires_at is None


def test_status_order_revoked_then_expired_then_disabled() -> None:
    key = ClientKey(id="k", name="a", prefix="nfrx-x", digest="d", created_at=0, updated_at=0)
    assert key.status(NOW) == ACTIVE
    expired = parse_update({"expires_at": "2026-05-17T11:59:59Z"}, key, NOW)
    assert expired.status(NOW) == EXPIRED
    assert parse_update({"enabled": False}, expired, NOW).status(NOW) == EXPIRED
    revoked = ClientKey(
        id="k", name="a", prefix="p", digest="d", created_at=0, updated_at=0, revoked_at=1
    )
    assert revoked.status(NOW) == REVOKED


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        (("*",), "anything/at:all", True),
        (("llama3*",), "llama3:8b", True),
        (("llama3*",), "Llama3:8b", False),  # case matters, like model ids
        (("qwen2.5:7b",), "qwen2.5:7b-q4", False),
        (("a", "b?"), "bc", True),
    ],
)
def test_models_are_shell_patterns(patterns: tuple[str, ...], model: str, allowed: bool) -> None:
    key = ClientKey(
        id="k", name="a", prefix="p", digest="d", created_at=0, updated_at=0, models=patterns
    )
    assert key.allows_model(model) is allowed


@pytest.mark.parametrize(
    ("patterns", "route", "allowed"),
    [
        (("*",), "mcp:files", True),
        (("llm",), "llm", True),
        (("llm",), "asr", False),
        (("mcp",), "mcp:anything", True),
        (("mcp:files-*",), "mcp:files-1", True),
        (("mcp:files-*",), "mcp:other", False),
        (("jobs", "docling"), "docling", True),
    ],
)
def test_routes(patterns: tuple[str, ...], route: str, allowed: bool) -> None:
    key = ClientKey(
        id="k", name="a", prefix="p", digest="d", created_at=0, updated_at=0, routes=patterns
    )
    assert key.allows_route(route) is allowed
