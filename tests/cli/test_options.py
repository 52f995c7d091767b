"""Options generated from a config class: a new setting is one attrs field, and the command
gets its option (spelling, type, parser, help, order) and its check without another line."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import typer
from typer.testing import CliRunner, Result

from nfrx.cli.options import ordered, settings_command
from nfrx.config.model import AgentConfig, Section, setting
from nfrx.config.values import Seconds


def _even(value: int) -> None:
    if value % 2:
        raise ValueError(f"must be even, got {value}")


@attrs.frozen(kw_only=True)
class Demo:
    name: str = setting("x", env="DEMO_NAME", doc="A name.")
    count: int = setting(2, env="DEMO_COUNT", doc="How many.", check=_even, section=Section.PROCESS)
    wait: Seconds = setting(5.0, env="DEMO_WAIT", doc="How long.")
    tags: tuple[str, ...] = setting((), env="DEMO_TAGS", doc="Tags.")
    loud: bool = setting(False, env="DEMO_LOUD", doc="Shout.", flag="--loud, -l")
    quiet: bool = setting(True, env="DEMO_QUIET", doc="Hush.", flag="--quiet / --no-quiet")


@pytest.fixture
def demo() -> tuple[typer.Typer, list[Any]]:
    received: list[Any] = []
    app = typer.Typer(rich_markup_mode=None, add_completion=False)
    app.command("demo")(settings_command(Demo, received.append))
    app.command("other")(lambda: None)  # two commands: ``demo`` stays a subcommand
    return app, received


def run(demo: tuple[typer.Typer, list[Any]], *args: str, **env: str) -> Result:
    names = {f.metadata["env"]: None for f in attrs.fields(Demo)}
    return CliRunner().invoke(demo[0], ["demo", *args], env={**names, **env})


def test_every_field_is_an_option(demo: tuple[typer.Typer, list[Any]]) -> None:
    result = run(demo, "--name", "n", "--wait", "2m", "--tags", "a, b", "-l", "--no-quiet")
    assert result.exit_code == 0, result.output
    assert demo[1] == [Demo(name="n", wait=120.0, tags=("a", "b"), loud=True, quiet=False)]


def test_options_keep_their_help_metavar_and_section_order(
    demo: tuple[typer.Typer, list[Any]],
) -> None:
    text = " ".join(run(demo, "--help").stdout.split())
    for phrase in (
        "--name <str> A name. [default: x] [env: DEMO_NAME]",
        "--wait DURATION How long. [default: 5.0] [env: DEMO_WAIT]",
        "--tags <str> Tags. [env: DEMO_TAGS]",
        "-l, --loud Shout. [default: False] [env: DEMO_LOUD]",
        "--quiet / --no-quiet Hush. [default: True] [env: DEMO_QUIET]",
        "--count <int> How many. [default: 2] [env: DEMO_COUNT]",
    ):
        assert phrase in text, phrase
    positions = [text.index(flag) for flag in ("--name", "--wait", "--tags", "--loud", "--count")]
    assert positions == sorted(positions)  # declared order, the PROCESS section last


def test_a_flag_wins_over_the_environment(demo: tuple[typer.Typer, list[Any]]) -> None:
    assert run(demo, "--count", "4", DEMO_COUNT="6", DEMO_WAIT="1h").exit_code == 0
    assert demo[1] == [Demo(count=4, wait=3600.0)]


def test_a_field_check_runs_and_names_the_variable(demo: tuple[typer.Typer, list[Any]]) -> None:
    for result in (run(demo, "--count", "3"), run(demo, DEMO_COUNT="3")):
        assert result.exit_code == 2
        assert result.stderr == "nfrx: configuration error: DEMO_COUNT: must be even, got 3\n"
    assert demo[1] == []


def test_a_bad_value_is_refused_by_the_flag_parser(demo: tuple[typer.Typer, list[Any]]) -> None:
    result = run(demo, "--count", "many")
    assert result.exit_code == 2
    assert "Invalid value for '--count': 'many' is not a whole number" in result.stderr
    assert demo[1] == []


def test_print_config_is_always_there(demo: tuple[typer.Typer, list[Any]]) -> None:
    result = run(demo, "--wait", "90s", "--print-config")
    assert result.exit_code == 0, result.output
    assert "demo_wait: 90.0\n" in result.stdout
    assert "demo_tags: []\n" in result.stdout
    assert demo[1] == []


def test_a_redefined_field_keeps_its_base_place() -> None:
    @attrs.frozen(kw_only=True)
    class Agent(AgentConfig):
        own: str = setting("", env="OWN", doc="Its own backend setting.")
        server_url: str = setting(
            "ws://h/api/x/connect", env="SERVER_URL", doc="Redefined.", section=Section.TUNNEL
        )

    names = [field.name for field in ordered(Agent)]
    assert names[:6] == [
        "server_url",
        "client_key",
        "client_id",
        "client_name",
        "own",
        "max_concurrency",
    ]
    assert names[-1] == "log_level"
