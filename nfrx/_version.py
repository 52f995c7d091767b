"""The one place the package version is defined (read by pyproject.toml and ``nfrx --version``)."""

from __future__ import annotations

__version__ = "0.1.0"
