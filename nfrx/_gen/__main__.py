"""``python -m nfrx._gen [--check]``: rewrite the generated completions and manual pages.

Writes ``completions/`` and ``man/`` at the top of the checkout, and the same files under
``nfrx/share/`` (shipped in the wheel as package data), removing generated pages of commands
that no longer exist. ``--check`` writes nothing and exits 1 if any file is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nfrx._gen import completion, manpage, tree

CHECKOUT = Path(__file__).resolve().parents[2]

TARGETS = (Path("completions"), Path("man"))
"""Directories at the top of the checkout that receive the generated files..."""
PACKAGE_COPY = Path("nfrx/share")
"""...and their copy inside the package: nfrx/share/completions, nfrx/share/man."""


def generated(root: tree.Command) -> dict[Path, str]:
    """Every generated file, by path relative to the checkout."""
    files: dict[Path, str] = {}
    for shell in completion.SHELLS:
        files[Path("completions") / completion.FILES[shell]] = completion.script(shell, root)
    for name, text in manpage.pages(root).items():
        files[Path("man") / name] = text
    return {**files, **{PACKAGE_COPY / path: text for path, text in files.items()}}


def stale(base: Path, files: dict[Path, str]) -> list[Path]:
    """Generated files under ``base`` that differ from ``files`` or should not exist."""
    out = [path for path, text in files.items() if _read(base / path) != text]
    for directory in (Path("man"), PACKAGE_COPY / "man"):
        out += [
            found.relative_to(base)
            for found in sorted((base / directory).glob("*.1"))
            if found.relative_to(base) not in files
        ]
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nfrx._gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    if not (CHECKOUT / "pyproject.toml").is_file():
        print(f"{CHECKOUT} is not an nfrx checkout; run this from the source tree", file=sys.stderr)
        return 2

    from nfrx.cli import app

    files = generated(tree.from_app(app))
    out_of_date = stale(CHECKOUT, files)
    if args.check:
        for path in out_of_date:
            print(f"out of date: {path}", file=sys.stderr)
        if out_of_date:
            print("regenerate with: python -m nfrx._gen", file=sys.stderr)
        return 1 if out_of_date else 0
    for path in out_of_date:
        target = CHECKOUT / path
        if path in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[path], encoding="utf-8")
            print(f"wrote {path}")
        else:
            target.unlink()
            print(f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
