"""The .deb: shell scripts parse (always); the package builds and holds what it should (opt-in).

Building runs pip against PyPI and takes 20-60 s, so it only runs with NFRX_TEST_DEB=1
(and dpkg-deb installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import PACKAGING, REPO

DEB = PACKAGING / "deb"
SCRIPTS = [DEB / "build.sh", *sorted((DEB / "maintscripts").iterdir())]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    shell = "bash" if script.suffix == ".sh" else "sh"
    subprocess.run([shell, "-n", str(script)], check=True, timeout=10)
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


build_enabled = pytest.mark.skipif(
    os.environ.get("NFRX_TEST_DEB") != "1" or shutil.which("dpkg-deb") is None,
    reason="set NFRX_TEST_DEB=1 (needs dpkg-deb, python3-venv and PyPI) to build the .deb",
)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run(
        [str(DEB / "build.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file()
    return path


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def _contents(deb: Path) -> dict[str, str]:
    """Path (without the leading '.') -> the `dpkg-deb -c` line."""
    entries = {}
    for line in _dpkg_deb("-c", str(deb)).splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        entries[name.removeprefix(".").rstrip("/") or "/"] = line
    return entries


@build_enabled
def test_package_contents(deb: Path) -> None:
    entries = _contents(deb)
    assert "-> /opt/nfrx/bin/nfrx" in entries["/usr/bin/nfrx"]
    assert entries["/usr/bin/nfrx"].startswith("l")
    for unit in (PACKAGING / "systemd").glob("*.service"):
        assert f"/lib/systemd/system/{unit.name}" in entries
    assert entries["/etc/nfrx/server.env"].startswith("-rw-------")
    for kind in ("llm", "mcp", "docling", "asr"):
        assert f"/etc/nfrx/{kind}.env.example" in entries
    pages = list(REPO.glob("nfrx/share/man/*.[1-9]"))
    assert pages
    for page in pages:
        assert f"/usr/share/man/man{page.suffix[1:]}/{page.name}.gz" in entries
    assert "/usr/share/bash-completion/completions/nfrx" in entries
    assert "/usr/share/zsh/vendor-completions/_nfrx" in entries
    assert "/usr/share/fish/vendor_completions.d/nfrx.fish" in entries
    assert "/usr/share/doc/nfrx/copyright" in entries
    assert all(" root/root " in line for line in entries.values())
    assert not [name for name in entries if "__pycache__" in name or name.endswith(".pyc")]


@build_enabled
def test_control_and_conffiles(deb: Path, tmp_path: Path) -> None:
    info = _dpkg_deb("-I", str(deb))
    assert "Package: nfrx" in info
    assert "Depends: python3 (>= 3.11" in info
    for script in ("postinst", "prerm", "postrm"):
        assert script in info
    _dpkg_deb("-e", str(deb), str(tmp_path / "control"))
    conffiles = (tmp_path / "control" / "conffiles").read_text().split()
    assert sorted(conffiles) == sorted(
        ["/etc/nfrx/server.env"]
        + [f"/etc/nfrx/{kind}.env.example" for kind in ("llm", "mcp", "docling", "asr")]
    )
    postinst = (tmp_path / "control" / "postinst").read_text()
    assert "adduser --system" in postinst
    assert "daemon-reload" in postinst
    postrm = (tmp_path / "control" / "postrm").read_text()
    purge_branch = postrm.split("purge)", 1)[1].split(";;", 1)[0]
    assert "/var/lib/nfrx" in purge_branch


@build_enabled
def test_extracted_nfrx_runs(deb: Path, tmp_path: Path) -> None:
    _dpkg_deb("-x", str(deb), str(tmp_path))
    venv = tmp_path / "opt" / "nfrx"
    script = venv / "bin" / "nfrx"
    # The entry point names the installed interpreter; run it with the extracted one instead.
    assert script.read_text().splitlines()[0] == "#!/opt/nfrx/bin/python"
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(script), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.stdout.startswith("nfrx ")
    assert "sha unknown" not in result.stdout


@build_enabled
@pytest.mark.skipif(shutil.which("lintian") is None, reason="lintian not installed")
def test_lintian_is_clean(deb: Path) -> None:
    """Errors and warnings left are overridden in the package and explained in LINTIAN.md."""
    result = subprocess.run(
        ["lintian", "--fail-on", "error,warning", str(deb)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout
