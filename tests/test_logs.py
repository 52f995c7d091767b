"""Log formats and secret masking (nfrx/logs.py)."""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfrx import logs
from nfrx.config.model import LlmAgentConfig


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", fmt="json")
    logging.getLogger("nfrx.test").info("hello %s", "world")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("nfrx.test").exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "hello world"
    assert first["level"] == "info"
    assert first["logger"] == "nfrx.test"
    assert first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exception"]


def test_secrets_are_masked_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = LlmAgentConfig(
        client_key="ck-very-secret", completion_api_key="sk-backend", log_dir=str(tmp_path / "d")
    )
    logs.setup(config, command="llm")
    logging.getLogger("nfrx.test").warning("header was Bearer ck-very-secret and sk-backend")
    for handler in logging.getLogger().handlers:
        handler.flush()
    err = capsys.readouterr().err
    file_text = (tmp_path / "d" / "nfrx-llm.log").read_text(encoding="utf-8")
    for text in (err, file_text):
        assert "header was Bearer *** and ***" in text
        assert "ck-very-secret" not in text


def test_log_dir_is_a_rotating_file(tmp_path: Path) -> None:
    logs.setup(LlmAgentConfig(log_dir=str(tmp_path / "new" / "dir")), command="llm")
    rotating = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.handlers.RotatingFileHandler)
    ]
    assert len(rotating) == 1
    assert rotating[0].baseFilename == str(tmp_path / "new" / "dir" / "nfrx-llm.log")
    assert (rotating[0].maxBytes, rotating[0].backupCount) == (10 * 1024 * 1024, 5)


def test_a_text_line_cannot_be_forged(capsys: pytest.CaptureFixture[str]) -> None:
    # An agent's name or id is the agent's choice: a newline in it must not start a line of its
    # own in the log (one that looks like the server wrote it).
    logs.configure("info", fmt="text")
    name = "evil\n12:00:00 WARNING nfrx.server: forged\r\x1b[2J\x00\u2028end\tok"
    logging.getLogger("nfrx.agents").info("llm agent %s connected", name)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        "llm agent evil\\n12:00:00 WARNING nfrx.server: forged\\r\\x1b[2J\\x00\\u2028end\tok "
        "connected"
    )


def test_a_traceback_keeps_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", fmt="text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("nfrx.test").exception("failed\nhere")
    err = capsys.readouterr().err
    assert "failed\\nhere\nTraceback (most recent call last):\n" in err
    assert err.rstrip().endswith("ValueError: boom")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_urls_are_redacted_in_every_line(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", fmt=fmt)
    logging.getLogger("nfrx.test").warning(
        "cannot reach the backend at %s: refused", "http://user:pw@10.0.0.5:8000/v1?key=k1"
    )
    err = capsys.readouterr().err
    assert "http://***@10.0.0.5:8000/v1?key=***: refused" in err
    assert "pw" not in err
    assert "k1" not in err
