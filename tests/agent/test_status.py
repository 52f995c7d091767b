"""The status API's pure parts: STATUS_ADDR parsing, the Host check and the control token file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nfrx.agent.status import (
    host_allowed,
    load_or_create_token,
    parse_address,
    token_path,
    user_config_dir,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4555", ("127.0.0.1", 4555)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:4555", ("::1", 4555)),
        (" 0.0.0.0:80 ", ("0.0.0.0", 80)),
    ],
)
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "4555", ":4555", "host:", "host:http", "::1:4555", "[]:4555", "h:65536", "h:-1"]
)
def test_bad_addresses_name_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match=r"^STATUS_ADDR .*expected host:port"):
        parse_address(text)


def test_token_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert user_config_dir() == tmp_path / "xdg" / "nfrx"
    assert token_path("") == tmp_path / "xdg" / "nfrx" / "worker.token"
    assert token_path(str(tmp_path / "etc" / "llm.yaml")) == tmp_path / "etc" / "worker.token"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # invalid per the spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_config_dir() == tmp_path / "home" / ".config" / "nfrx"


def test_token_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "worker.token"
    token = load_or_create_token(path)
    assert len(token) == 64
    int(token, 16)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert load_or_create_token(path) == token


def test_a_token_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "worker.token"
    path.write_text("abc\n")
    path.chmod(0o644)
    assert load_or_create_token(path) == "abc"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_an_empty_token_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "worker.token"
    path.write_text("")
    token = load_or_create_token(path)
    assert len(token) == 64
    assert path.read_text() == token + "\n"


@pytest.mark.parametrize(
    ("host", "status_host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:4555", "127.0.0.1"),
        ("127.9.9.9:1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("LocalHost.:4555", "127.0.0.1"),
        ("api.localhost", "127.0.0.1"),
        ("[::1]:4555", "127.0.0.1"),
        ("[::1]", "::1"),
        ("box.lan:4555", "box.lan"),
        ("BOX.lan", "box.lan"),
        ("10.0.0.7:4555", "10.0.0.7"),
        ("[fd00::7]:4555", "fd00::7"),
    ],
)
def test_hosts_naming_this_api(host: str, status_host: str) -> None:
    assert host_allowed(host, status_host)


@pytest.mark.parametrize(
    ("host", "status_host"),
    [
        ("evil.example", "127.0.0.1"),
        ("evil.example:4555", "127.0.0.1"),
        ("127.0.0.1.evil.example", "127.0.0.1"),
        ("localhost.evil.example", "127.0.0.1"),
        ("localhostevil", "127.0.0.1"),
        ("10.0.0.7", "127.0.0.1"),
        ("0.0.0.0:4555", "127.0.0.1"),
        ("", "127.0.0.1"),
        (":4555", "127.0.0.1"),
        ("box.lan", ""),
    ],
)
def test_hosts_of_anything_else(host: str, status_host: str) -> None:
    assert not host_allowed(host, status_host)
