"""What a source file imports, read statically, and what a fresh interpreter loads (for the
tests of the import rules)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter in the repository (this checkout's ``nfrx`` first on
    its path), its output captured as text; never raises for a failing exit."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def _dynamic_target(node: ast.Call) -> str | None:
    """The module an ``import_module(...)`` / ``__import__(...)`` call names, when its argument
    is a string or an f-string (then its literal start: ``f"nfrx.plugins.{name}"`` gives
    ``nfrx.plugins.``)."""
    name = getattr(node.func, "attr", getattr(node.func, "id", None))
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    if isinstance(first, ast.JoinedStr) and first.values:
        head = first.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``import x``, ``from x import y``, ``from x.y import z``,
    and ``import_module``/``__import__`` calls with a literal name), at any depth: inside
    functions and ``TYPE_CHECKING`` blocks too. ``from nfrx import plugins`` counts as
    ``nfrx.plugins``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and (target := _dynamic_target(node)) is not None:
            names.add(target)
    return names
