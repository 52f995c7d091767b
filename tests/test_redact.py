"""URL redaction for logs, /status, error texts and --print-config."""

from __future__ import annotations

import pytest

from nfrx.redact import redact, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "http://user:pass@10.0.0.5:8000/v1?key=x",
            "http://***@10.0.0.5:8000/v1?key=***",
        ),
        ("http://10.0.0.5:8000/v1", "http://10.0.0.5:8000/v1"),
        ("https://token@host", "https://***@host"),
        ("https://a:b@c@host/p", "https://***@host/p"),
        ("http://host/p?a=1&b=&c", "http://host/p?a=***&b=***&***"),
        ("http://host/p?", "http://host/p?"),
        ("http://host/p#access_token=t&x=y", "http://host/p#access_token=***&x=***"),
        ("http://host/p/@cf/model", "http://host/p/@cf/model"),
        ("ws://u:p@[::1]:8080/api/llm/connect", "ws://***@[::1]:8080/api/llm/connect"),
        ("redis://:secret@cache:6379/0", "redis://***@cache:6379/0"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_finds_every_url_in_a_text() -> None:
    text = (
        "cannot reach the backend at http://u:p@10.0.0.5:8000/v1?key=k: [Errno 111]; "
        "url 'https://x:y@h/a?token=t' failed (see \"http://plain/ok\")"
    )
    assert redact(text) == (
        "cannot reach the backend at http://***@10.0.0.5:8000/v1?key=***: [Errno 111]; "
        "url 'https://***@h/a?token=***' failed (see \"http://plain/ok\")"
    )
    assert "p@" not in redact(text)
    assert redact("no urls here: user:pass@host") == "no urls here: user:pass@host"
