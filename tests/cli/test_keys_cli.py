"""``nfrx keys`` without a server: the bodies its options make, and how answers are printed."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from nfrx.cli import app
from nfrx.cli.keys import expiry_fields, key_body, render_key, render_keys

NO_LIMITS: dict[str, int | None] = dict.fromkeys(
    ("requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month")
)


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("30d", {"expires_in": 30 * 86400.0}),
        ("1w2d", {"expires_in": 9 * 86400.0}),
        ("1h30m", {"expires_in": 5400.0}),
        ("2027-01-31", {"expires_at": "2027-01-31T00:00:00Z"}),
        ("2027-01-31T10:00:00+02:00", {"expires_at": "2027-01-31T10:00:00+02:00"}),
        ("never", {"expires_at": None}),
    ],
)
def test_expires_is_a_duration_or_a_date(text: str, fields: dict[str, object]) -> None:
    assert expiry_fields(text) == fields


def test_a_bad_expiry_names_the_option() -> None:
    with pytest.raises(typer.BadParameter, match="neither a duration"):
        expiry_fields("soon")


def test_only_given_options_reach_the_body_and_zero_lifts_a_limit() -> None:
    assert key_body(models=None, routes=None, limits=NO_LIMITS, expires=None) == {}
    body = key_body(
        models=["llama3*,qwen*", "phi"],
        routes=["llm"],
        limits={**NO_LIMITS, "requests_per_minute": 10, "tokens_per_day": 0},
        expires="12h",
    )
    assert body == {
        "models": ["llama3*", "qwen*", "phi"],
        "routes": ["llm"],
        "limits": {"requests_per_minute": 10, "tokens_per_day": None},
        "expires_in": 43200.0,
    }


KEY = {
    "id": "key_0123456789ab",
    "name": "alice",
    "prefix": "nfrx-AbCd1234",
    "status": "active",
    "models": ["llama*"],
    "routes": ["*"],
    "limits": {"requests_per_minute": 10, "tokens_per_day": 5000},
    "expires_at": None,
    "created_at": "2026-05-17T12:00:00Z",
    "usage": {"requests": 3, "errors": 1, "input_tokens": 9, "output_tokens": 12},
    "usage_by_model": [
        {"model": "llama3:8b", "requests": 3, "errors": 1, "input_tokens": 9, "output_tokens": 12}
    ],
    "windows": {"requests_this_minute": 1, "tokens_today": 21},
}


def test_the_list_hides_revoked_keys_unless_asked() -> None:
    revoked = {**KEY, "name": "old", "status": "revoked"}
    text = render_keys({"keys": [KEY, revoked]})
    assert text.splitlines()[0].split() == [
        "NAME",
        "ID",
        "PREFIX",
        "STATUS",
        "MODELS",
        "ROUTES",
        "LIMITS",
        "REQUESTS",
        "TOKENS",
        "IN/OUT",
        "LAST",
        "USED",
    ]
    assert "alice" in text
    assert "old" not in text
    assert "10 req/min, 5000 tok/day" in text
    assert "old" in render_keys({"keys": [KEY, revoked]}, everything=True)
    assert render_keys({"keys": [revoked]}) == "no client keys (--all shows revoked ones)"


def test_show_prints_rules_usage_and_models() -> None:
    text = render_key(KEY)
    assert "name:         alice" in text
    assert "expires:      never" in text
    usage = "usage:        3 requests (1 errors, 0 refused, 0 cancelled), tokens 9 in / 12 out"
    assert usage in text
    assert "21 tokens today" in text
    assert "llama3:8b" in text


def test_a_server_that_cannot_be_reached_exits_1_with_one_line() -> None:
    result = CliRunner().invoke(
        app, ["keys", "list", "--server", "http://127.0.0.1:9", "--api-key", "ak"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("nfrx keys: cannot reach http://127.0.0.1:9/api/admin/keys")
    assert len(result.stderr.splitlines()) == 1


def test_update_without_a_change_exits_2() -> None:
    result = CliRunner().invoke(app, ["keys", "update", "alice", "--server", "http://x"])
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr
