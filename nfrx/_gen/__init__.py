"""Generated distribution files: shell completions and manual pages, built from the command tree.

:mod:`nfrx._gen.tree` reads the Typer app into plain values; :mod:`nfrx._gen.completion` and
:mod:`nfrx._gen.manpage` render them; :mod:`nfrx._gen.pages` holds the hand-written parts of the
manual. ``python -m nfrx._gen`` (or ``python scripts/gen_all.py``) rewrites every generated file;
``tests/dist`` fails when a checked-in file differs from what these modules produce.
"""
