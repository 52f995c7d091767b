"""nfrx.protocol is sans-I/O: importing it must not pull in an async runtime, WebSocket or HTTP
library, and none of its modules may import one."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

import nfrx.protocol
from tests.imports import imported_modules, run_python

IO_MODULES = ("trio", "trio_websocket", "httpx", "quart", "hypercorn", "wsproto", "h11", "anyio")
PACKAGE_DIR = Path(nfrx.protocol.__file__).resolve().parent

CHECK = textwrap.dedent(
    """
    import sys
    {preamble}
    import nfrx.protocol
    assert "nfrx.protocol.connection" in sys.modules
    forbidden = {modules!r}
    loaded = sorted(
        name for name in sys.modules if name.split(".")[0] in forbidden
    )
    if loaded:
        raise SystemExit("I/O modules imported: " + ", ".join(loaded))
    print("clean")
    """
)


def _run_check(preamble: str = "") -> subprocess.CompletedProcess[str]:
    return run_python(CHECK.format(preamble=preamble, modules=IO_MODULES))


def test_importing_the_protocol_loads_no_io_library() -> None:
    result = _run_check()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_the_import_check_would_notice_an_io_library() -> None:
    """Guards the test above against passing vacuously (trio is a dependency of nfrx)."""
    result = _run_check(preamble="import trio")
    assert result.returncode != 0
    assert "trio" in result.stderr


SOURCES = sorted(PACKAGE_DIR.glob("*.py"))


def test_the_static_check_would_notice_an_io_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import json\n"
        "def f():\n"
        "    import trio.lowlevel\n"
        "    from httpx import AsyncClient\n"
        "    return importlib.import_module('wsproto')\n",
        encoding="utf-8",
    )
    assert imported_modules(sample) >= {"json", "trio.lowlevel", "httpx", "wsproto"}


def test_protocol_sources_are_found() -> None:
    assert {p.name for p in SOURCES} >= {"codec.py", "connection.py", "frames.py", "state.py"}
    assert "cattrs" in imported_modules(PACKAGE_DIR / "codec.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_module_imports_an_io_library(path: Path) -> None:
    imported = imported_modules(path)
    offending = sorted(name for name in imported if name.split(".")[0] in IO_MODULES)
    assert offending == [], f"{path.name} imports {offending}"
    # the plain-text rule as well: no line that starts with import/from names one of them
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.replace(",", " ").split()
        if words[:1] in (["import"], ["from"]):
            assert not any(w.split(".")[0] in IO_MODULES for w in words[1:]), line
