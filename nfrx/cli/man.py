"""``nfrx man``: show a manual page shipped in the package.

``pip install`` and ``pipx install`` put no page where ``man`` looks (only the .deb does), so the
pages travel as package data (``nfrx/share/man``) and this command shows them: through
``man -l`` when ``man`` is installed, else as plain text (:func:`plain`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from importlib import resources
from typing import Annotated

import typer

HELP = (
    "Show the manual page of nfrx, or of COMMAND (nfrx man serve). The pages ship in the "
    "package, so this works after pip or pipx install, where 'man nfrx' finds nothing (the "
    ".deb installs them where man looks). Shown with 'man -l' when man is installed, else "
    "printed as plain text."
)


def command(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="COMMAND",
            help="The command whose page to show (default: the page of nfrx itself).",
            show_default=False,
        ),
    ] = None,
) -> None:
    commands = sorted(getattr(ctx.find_root().command, "commands", {}))
    if name is not None and name not in commands:
        typer.echo(f"nfrx man: no command {name!r} (commands: {', '.join(commands)})", err=True)
        raise typer.Exit(2)
    page = "nfrx.1" if name is None else f"nfrx-{name}.1"
    with resources.as_file(resources.files("nfrx") / "share" / "man" / page) as path:
        if not path.is_file():
            typer.echo(f"nfrx man: {page} is not installed with this nfrx", err=True)
            raise typer.Exit(1)
        man = shutil.which("man")
        if man is not None:
            raise typer.Exit(subprocess.run([man, "-l", str(path)], check=False).returncode)
        typer.echo(plain(path.read_text(encoding="utf-8")), nl=False)


def plain(roff: str, width: int = 80) -> str:
    """A page written by :mod:`nfrx._gen.manpage` as plain text, laid out like ``man`` does
    (sections flush left, text indented, tagged paragraphs under their tag)."""
    text = _PlainText(width)
    for line in roff.splitlines():
        if line.startswith("."):
            name, _, args = line[1:].partition(" ")
            text.macro(name, _inline(args))
        else:
            text.text(_inline(line))
    text.flush()
    return "\n".join(text.lines).strip("\n") + "\n"


_ESCAPE = re.compile(r"\\(f[BIR]|-|e|&|\[u([0-9A-F]{4})\])")


def _inline(roff: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(2):
            return chr(int(match.group(2), 16))
        return {"-": "-", "e": "\\"}.get(match.group(1), "")

    return _ESCAPE.sub(replace, roff)


class _PlainText:
    """The few macros the generator uses, one method each; others (.TH, .ad, .nh) print
    nothing."""

    TEXT = 7
    """Indent of body text; a tagged paragraph's text is indented once more."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.lines: list[str] = []
        self.words: list[str] = []
        self.indent = self.TEXT
        self.shift = 0
        self.tag_next = False
        self.verbatim = False
        self.heading = False
        """Nothing but a section heading since the last paragraph: no blank line."""

    def macro(self, name: str, args: str) -> None:
        handler = getattr(self, f"_{name}", None)
        if handler is not None:
            handler(args)

    def text(self, line: str) -> None:
        self.heading = False
        pad = " " * (self.indent + self.shift)
        if self.verbatim:
            self.lines.append(pad + line)
        elif self.tag_next:
            self.lines.append(" " * (self.TEXT + self.shift) + line)
            self.tag_next = False
            self.indent = 2 * self.TEXT
        else:
            self.words.append(line)

    def flush(self) -> None:
        if self.words:
            pad = " " * (self.indent + self.shift)
            self.lines += textwrap.wrap(
                " ".join(self.words),
                self.width,
                initial_indent=pad,
                subsequent_indent=pad,
                break_long_words=False,
                break_on_hyphens=False,  # option and page names stay whole
            )
            self.words = []

    def _SH(self, args: str) -> None:  # named for the roff macros
        self.flush()
        self.lines += ["", args.strip('"')]
        self.indent, self.shift = self.TEXT, 0
        self.heading = True

    def _TP(self, args: str) -> None:
        self._PP(args)
        self.tag_next = True

    def _PP(self, args: str) -> None:
        self.flush()
        if not self.heading:
            self.lines.append("")
        self.indent = self.TEXT

    def _RS(self, args: str) -> None:
        self.flush()
        self.shift += int(args or "4")

    def _RE(self, args: str) -> None:
        self.flush()
        self.shift = 0

    def _EX(self, args: str) -> None:
        self.flush()
        self.verbatim = True

    def _EE(self, args: str) -> None:
        self.verbatim = False

    def _B(self, args: str) -> None:
        self.text(args)

    def _BR(self, args: str) -> None:
        self.text(args.replace(" ", ""))
