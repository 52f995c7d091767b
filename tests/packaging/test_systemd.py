"""The systemd units: the settings the brief promises, and `systemd-analyze verify` on them."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from nfrx.config.model import AgentConfig, ServerConfig
from tests.packaging.conftest import PACKAGING

UNITS = PACKAGING / "systemd"
AGENTS = ("llm", "mcp", "docling", "asr")
HARDENING = {
    "NoNewPrivileges": "true",
    "ProtectSystem": "strict",
    "ProtectHome": "true",
    "PrivateTmp": "true",
}


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text(encoding="utf-8"))
    return parser


def _seconds(value: str) -> float:
    assert value.endswith("s")
    return float(value[:-1])


def test_the_units_are_all_there() -> None:
    expected = {"nfrx.service", *(f"nfrx-{kind}@.service" for kind in AGENTS)}
    assert {p.name for p in UNITS.glob("*.service")} == expected


@pytest.mark.parametrize("name", ["nfrx.service", *(f"nfrx-{k}@.service" for k in AGENTS)])
def test_common_settings(name: str) -> None:
    service = _unit(name)["Service"]
    for key, value in HARDENING.items():
        assert service[key] == value, key
    assert service["User"] == "nfrx"
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecStart"].startswith("/usr/bin/nfrx ")
    for key in ("StateDirectory", "CacheDirectory", "RuntimeDirectory"):
        assert service[key].startswith("nfrx/"), key
    assert _unit(name)["Install"]["WantedBy"] == "multi-user.target"


def test_server_unit() -> None:
    service = _unit("nfrx.service")["Service"]
    assert service["ExecStart"] == "/usr/bin/nfrx serve"
    assert service["EnvironmentFile"] == "/etc/nfrx/server.env"
    assert service["Restart"] == "on-failure"
    drain = ServerConfig().drain_timeout
    assert _seconds(service["TimeoutStopSec"]) == drain + 30
    assert service["KillMode"] == "mixed"  # with WORKERS, the parent signals its workers


@pytest.mark.parametrize("kind", AGENTS)
def test_agent_unit(kind: str) -> None:
    service = _unit(f"nfrx-{kind}@.service")["Service"]
    assert service["ExecStart"] == f"/usr/bin/nfrx {kind}"
    assert service["EnvironmentFile"] == f"/etc/nfrx/{kind}-%i.env"
    assert service["Restart"] == "always"
    # configparser keeps the last of repeated keys; check the whole text for this one.
    assert "\nEnvironment=RECONNECT=true\n" in (UNITS / f"nfrx-{kind}@.service").read_text()
    drain = AgentConfig().drain_timeout
    assert _seconds(service["TimeoutStopSec"]) == drain + 30
    for key in ("StateDirectory", "CacheDirectory", "RuntimeDirectory"):
        # One directory per instance: stopping one agent must not remove another's.
        assert service[key] == f"nfrx/{kind}-%i", key


def _verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(directory / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0"},
    )


def _stubbed_units(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart is a stub executable in ``tmp_path``.

    `systemd-analyze verify` insists that ExecStart exists; the units name /usr/bin/nfrx, which
    only the package installs. Everything else in the units is verified as shipped.
    """
    stub = tmp_path / "nfrx"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for unit in UNITS.glob("*.service"):
        text = unit.read_text(encoding="utf-8").replace("/usr/bin/nfrx", str(stub))
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    return tmp_path


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (apt-get install systemd)",
)


@needs_systemd_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    directory = _stubbed_units(tmp_path)
    # Templates are verified through an instance; verify finds the template beside it.
    units = ["nfrx.service", *(f"nfrx-{kind}@check.service" for kind in AGENTS)]
    result = _verify(directory, *units)
    # verify exits 0 on unknown keys and bad values too, and only warns: any output is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


@needs_systemd_analyze
def test_systemd_analyze_verify_reports_mistakes(tmp_path: Path) -> None:
    directory = _stubbed_units(tmp_path)
    unit = directory / "nfrx.service"
    unit.write_text(unit.read_text().replace("ProtectHome=true", "ProtectHomeDir=true"))
    result = _verify(directory, "nfrx.service")
    assert "Unknown key 'ProtectHomeDir'" in result.stderr
