"""docs/settings.md is generated from the config models and must be kept up to date."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import typer

from nfrx.cli import app
from nfrx.config.reference import COMMANDS, flag, markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_docs_settings_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/settings.md is stale: run `python -m nfrx.config.reference > docs/settings.md`"
    )


def test_every_setting_is_documented() -> None:
    text = markdown()
    for _, cls in COMMANDS:
        for field in attrs.fields(cls):
            assert f"| `{field.metadata['env']}` |" in text


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_documented_flags_are_the_cli_flags(command: str, cls: type[object]) -> None:
    click_command = typer.main.get_command(app)
    params = {p.name: p for p in click_command.commands[command].params}  # type: ignore[attr-defined]
    for field in attrs.fields(cls):  # type: ignore[misc]
        param = params[field.name]
        spellings = {*param.opts, *param.secondary_opts}
        documented = {s.strip() for s in flag(field).replace("/", ",").split(",")}
        assert documented == spellings, field.name
