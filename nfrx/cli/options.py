"""Shared pieces of the command definitions: help text comes from the config model's metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import typer

if TYPE_CHECKING:
    from nfrx.config.load import ConfigError


def doc(cls: type[Any], field: str) -> str:
    """Help text for ``field`` of config class ``cls``: its description, default and env var."""
    meta = attrs.fields_dict(cls)[field]
    default = meta.default
    shown = "" if default in ("", None) or meta.metadata.get("secret") else f" [default: {default}]"
    return f"{meta.metadata['help']}{shown} [env: {meta.metadata['env']}]"


def fail(exc: ConfigError) -> typer.Exit:
    typer.echo(f"nfrx: configuration error: {exc}", err=True)
    return typer.Exit(2)
