"""``python -m nfrx._gen [--check]``: rewrite the generated completions and manual pages.

Writes ``nfrx/share/completions/`` and ``nfrx/share/man/`` in the checkout: the one copy, shipped
in the wheel as package data (``nfrx completion`` and ``nfrx man`` read from the package; the
.deb installs them where the shells and ``man`` look), removing generated pages of commands that
no longer exist. ``--check`` writes nothing and exits 1 if any file is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nfrx._gen import completion, manpage, tree

CHECKOUT = Path(__file__).resolve().parents[2]

SHARE = Path("nfrx/share")
"""Where the generated files live, relative to the checkout: nfrx/share/completions, .../man."""


def generated(root: tree.Command) -> dict[Path, str]:
    """Every generated file, by path relative to the checkout."""
    files: dict[Path, str] = {}
    for shell in completion.SHELLS:
        files[SHARE / "completions" / completion.FILES[shell]] = completion.script(shell, root)
    for name, text in manpage.pages(root).items():
        files[SHARE / "man" / name] = text
    return files


def stale(base: Path, files: dict[Path, str]) -> list[Path]:
    """Generated files under ``base`` that differ from ``files`` or should not exist."""
    out = [path for path, text in files.items() if _read(base / path) != text]
    out += [
        found.relative_to(base)
        for found in sorted((base / SHARE / "man").glob("*.1"))
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
