"""The limits on what an agent announces (pure: frames in, OverLimit out)."""

from __future__ import annotations

from typing import Any

import pytest

from nfrx.config.model import ServerConfig
from nfrx.protocol import Status
from nfrx.server.announcements import (
    MAX_IDENTITY_BYTES,
    MAX_LABEL_BYTES,
    MAX_OPTION_BYTES,
    MAX_OPTIONS,
    AnnouncementLimits,
    OverLimit,
    check_hello,
    check_status,
)
from tests.protocol.helpers import make_hello

LIMITS = AnnouncementLimits(max_models=3, max_model_name_bytes=8)


def test_the_defaults_come_from_the_config() -> None:
    assert AnnouncementLimits.of(ServerConfig()) == AnnouncementLimits(
        max_models=1000, max_model_name_bytes=256
    )
    config = ServerConfig(agent_max_models=5, agent_max_model_name_bytes=7)
    assert AnnouncementLimits.of(config) == AnnouncementLimits(max_models=5, max_model_name_bytes=7)


def test_a_hello_at_every_limit_is_accepted() -> None:
    check_hello(
        make_hello(
            agent_id="i" * MAX_IDENTITY_BYTES,
            name="n" * MAX_IDENTITY_BYTES,
            agent_version="v" * MAX_LABEL_BYTES,
            status="s" * MAX_LABEL_BYTES,
            models=("a", "b", "12345678"),
            options=tuple((f"{i:02}", "v" * (MAX_OPTION_BYTES - 2)) for i in range(MAX_OPTIONS)),
        ),
        LIMITS,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"models": ("a", "b", "c", "d")},
            "4 models announced; at most 3 accepted (AGENT_MAX_MODELS)",
        ),
        (
            {"models": ("123456789",)},
            "model name '123456789' is 9 bytes; at most 8 accepted (AGENT_MAX_MODEL_NAME_BYTES)",
        ),
        ({"models": ("ééééé",)}, r"model name '\xe9\xe9\xe9\xe9'... is 10 bytes"),  # UTF-8
        ({"models": ("\ud800" * 3,)}, "is 9 bytes"),  # a lone surrogate JSON can carry
        ({"agent_id": "i" * 257}, "agent id 'iiiiiiiiiiiiiiii'... is 257 bytes; at most 256"),
        ({"name": "a\nb" * 100}, r"agent name 'a\nba\nba\nba\nb'... is 300 bytes"),
        (
            {"agent_version": "v" * 65},
            "agent version 'vvvvvvvvvvvvvvvv'... is 65 bytes; at most 64",
        ),
        ({"status": "s" * 65}, "status 'ssssssssssssssss'... is 65 bytes; at most 64"),
        ({"options": tuple((str(i), "") for i in range(65))}, "65 options; at most 64 accepted"),
        ({"options": (("key", "v" * 4094),)}, "option 'key' is 4097 bytes; at most 4096 accepted"),
    ],
)
def test_a_hello_over_a_limit_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(OverLimit) as refused:
        check_hello(make_hello(**fields), LIMITS)
    assert message in str(refused.value)


def test_status_limits() -> None:
    check_status(Status(models=("a", "b", "c"), max_concurrency=1, status="ready"), LIMITS)
    with pytest.raises(OverLimit, match="4 models announced"):
        check_status(Status(models=("a", "b", "c", "d"), max_concurrency=1, status="x"), LIMITS)
    with pytest.raises(OverLimit, match=r"^model name 'x{16}'\.\.\. is 1000000 bytes"):
        check_status(Status(models=("x" * 1_000_000,), max_concurrency=1, status="x"), LIMITS)
    with pytest.raises(OverLimit, match=r"^status "):
        check_status(Status(models=(), max_concurrency=1, status="s" * 100), LIMITS)


def test_messages_stay_short_whatever_was_announced() -> None:
    """They are logged, sent in a Refuse, and become a WebSocket close reason (123 bytes)."""
    for fields in (
        {"models": ("é" * 100_000,)},
        {"name": "\x00" * 100_000},
        {"options": (("\U0001f600" * 10_000, ""),)},
    ):
        with pytest.raises(OverLimit) as refused:
            check_hello(make_hello(**fields), AnnouncementLimits())
        reason = f"status over limit: {refused.value}"
        assert len(reason.encode()) <= 123, reason
