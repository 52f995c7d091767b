"""What nfrx imports is what it declares, and constraints.txt pins every declared package."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(canonical(match.group(0)))
    return names


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in (REPO / "nfrx").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"nfrx"}


def test_every_imported_package_is_a_declared_dependency() -> None:
    # A package used only through another's dependencies (werkzeug through quart) breaks the day
    # that one stops depending on it.
    distributions = importlib.metadata.packages_distributions()
    dependencies = declared(PROJECT["dependencies"])
    missing = {
        module: distributions.get(module)
        for module in imported_top_level_modules()
        if not {canonical(d) for d in distributions.get(module, [])} & dependencies
    }
    assert missing == {}


def test_constraints_pin_every_declared_package() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line}"
            pins[canonical(name)] = version
    wanted = declared(PROJECT["dependencies"]) | declared(PROJECT["optional-dependencies"]["test"])
    assert sorted(wanted - set(pins)) == [], "refresh it: scripts/refresh-constraints.sh"
    assert canonical("nfrx") not in pins  # the project itself is installed from the checkout
