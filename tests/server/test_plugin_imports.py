"""The import rules around plugins (:mod:`nfrx.server.plugin`): the core imports no plugin, the
settings import no plugin, only the composition reads the one list, and a plugin's class loads
neither half of it until asked (so ``nfrx --help`` and the agents stay light)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import nfrx
from tests.imports import imported_modules, run_python

PACKAGE = Path(nfrx.__file__).resolve().parent

COMPOSITION = {PACKAGE / "server" / "runner.py"}
"""The core module that may read the list (:mod:`nfrx.plugins` itself, never a plugin)."""

CORE = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if PACKAGE / "plugins" not in path.parents
    and PACKAGE / "cli" not in path.parents
    and path.name != "__main__.py"
    and path not in COMPOSITION
)
"""Everything but the plugins and the composition (the CLI, ``python -m nfrx``, the runner)."""


def _plugin_imports(path: Path) -> list[str]:
    return sorted(name for name in imported_modules(path) if name.startswith("nfrx.plugins"))


def test_the_core_is_found() -> None:
    names = {str(path.relative_to(PACKAGE)) for path in CORE}
    assert {"server/app.py", "server/state.py", "server/metrics.py", "config/load.py"} <= names
    assert {"server/openapi.py", "server/agent_socket.py", "agent/runtime.py"} <= names
    assert not any(name.startswith(("plugins/", "cli/")) for name in names)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_imports_no_plugin(path: Path) -> None:
    """Settings included (``nfrx/config``): ``PLUGINS`` is checked by ``nfrx serve``."""
    assert _plugin_imports(path) == []


def test_the_composition_reads_the_list_only() -> None:
    for path in COMPOSITION:
        assert _plugin_imports(path) == ["nfrx.plugins"], path


def test_the_rule_would_notice_a_plugin_imported_by_name(tmp_path: Path) -> None:
    """Guards the tests above: every way the core used to reach a plugin is seen."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from nfrx import plugins\n"
        "if TYPE_CHECKING:\n"
        "    from nfrx.plugins.mcp.sessions import McpRelays\n"
        "def mount(name):\n"
        "    return importlib.import_module(f'nfrx.plugins.{name}.server')\n",
        encoding="utf-8",
    )
    assert _plugin_imports(sample) == [
        "nfrx.plugins",
        "nfrx.plugins.",
        "nfrx.plugins.mcp.sessions",
        "nfrx.plugins.mcp.sessions.McpRelays",
    ]


LOADED = textwrap.dedent(
    """
    import sys
    {code}
    print("\\n".join(sorted(sys.modules)))
    """
)


def _modules_after(code: str) -> set[str]:
    result = run_python(LOADED.format(code=code))
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


WEB_STACK = ("quart", "quart_trio", "hypercorn", "werkzeug")


def _web(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in WEB_STACK)


def test_loading_settings_loads_no_plugin() -> None:
    modules = _modules_after("import nfrx.config.load, nfrx.config.model")
    assert not [name for name in modules if name.startswith("nfrx.plugins")]


def test_the_command_line_loads_the_list_and_no_plugin() -> None:
    """What ``nfrx --help`` imports: the list (for the ``PLUGINS`` check), no plugin."""
    modules = _modules_after("import nfrx.cli")
    assert "nfrx.plugins" in modules
    assert not [name for name in modules if name.startswith("nfrx.plugins.")]
    assert _web(modules) == []


def test_agent_plugin_classes_load_no_web_stack() -> None:
    """An agent (``nfrx llm``...) gets its plugin's class without the server's web stack; the
    server-side halves are imported when the server asks for them. (Service plugins have no
    agent side: they only ever load in a server.)"""
    modules = _modules_after(
        "from nfrx.plugins import SERVER_PLUGINS, plugin_class\n"
        "for name in SERVER_PLUGINS: plugin_class(name)"
    )
    assert _web(modules) == []
    assert "nfrx.plugins.llm.plugin" in modules
    halves = [name for name in modules if name.startswith("nfrx.plugins.")]
    assert not [name for name in halves if name.endswith((".server", ".openapi"))]


def test_the_web_stack_check_would_notice_it() -> None:
    """Guards the test above against passing vacuously."""
    assert _web(_modules_after("import nfrx.plugins.llm.server")) != []
