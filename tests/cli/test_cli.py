"""The ``nfrx`` command line: version, help, error exits, and the config each command builds.

The library entry points (``nfrx.cli.serve.run`` / ``nfrx.cli.llm.run``) are replaced by a
recorder, so these tests see exactly the config object the library would receive.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import typer
from typer.testing import CliRunner, Result

import nfrx._build
import nfrx.cli.asr
import nfrx.cli.docling
import nfrx.cli.llm
import nfrx.cli.serve
from nfrx._version import __version__
from nfrx.cli import app
from nfrx.config import reference, values
from nfrx.config.model import AsrAgentConfig, DoclingAgentConfig, LlmAgentConfig, ServerConfig
from tests.e2e.harness import clean_env

ALL_ENV = sorted(
    {
        f.metadata["env"]
        for cls in (ServerConfig, LlmAgentConfig, DoclingAgentConfig, AsrAgentConfig)
        for f in attrs.fields(cls)
    }
)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Configs handed to the library (nothing is actually started)."""
    configs: list[Any] = []
    monkeypatch.setattr(nfrx.cli.serve, "run", configs.append)
    monkeypatch.setattr(nfrx.cli.llm, "run", configs.append)
    monkeypatch.setattr(nfrx.cli.docling, "run", configs.append)
    monkeypatch.setattr(nfrx.cli.asr, "run", configs.append)
    return configs


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """Run ``nfrx <args>`` in-process with only ``env`` among the nfrx variables set."""
    environment: dict[str, str | None] = dict.fromkeys(ALL_ENV)
    environment.update(env or {})
    return CliRunner().invoke(app, args, env=environment)


def flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


# -- version ------------------------------------------------------------------------------------

VERSION_LINE = re.compile(r"^nfrx (\S+) \(sha (\S+), built (\S+)\)$")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str) -> None:
    result = invoke([flag])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    match = VERSION_LINE.match(line)
    assert match, line
    version, sha, date = match.groups()
    assert version == __version__
    info = nfrx._build.build_info()
    assert (sha, date) == (info["sha"], info["date"])
    if sha != "unknown":
        assert re.fullmatch(r"[0-9a-f]{7,40}", sha), sha
        datetime.fromisoformat(date)


def test_version_from_a_git_checkout() -> None:
    probe = subprocess.run(
        ["git", "-C", str(nfrx._build.Path(nfrx._build.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("not running from a git checkout")
    line = invoke(["--version"]).stdout.strip()
    match = VERSION_LINE.match(line)
    assert match, line
    _, sha, date = match.groups()
    assert probe.stdout.strip().startswith(sha)
    assert datetime.fromisoformat(date).tzinfo is not None


def test_version_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("git")

    monkeypatch.setattr(nfrx._build.subprocess, "run", no_git)
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"nfrx {__version__} (sha unknown, built unknown)"


def test_version_as_a_real_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nfrx", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert VERSION_LINE.match(result.stdout.strip()), result.stdout
    assert result.stdout.startswith(f"nfrx {__version__} ")


def test_version_wins_over_a_command(captured: list[Any]) -> None:
    result = invoke(["--version", "serve"])
    assert result.exit_code == 0
    assert VERSION_LINE.match(result.stdout.strip())
    assert captured == []


# -- help ---------------------------------------------------------------------------------------


def test_commands_are_exactly_the_working_ones() -> None:
    command = typer.main.get_command(app)
    commands = sorted(command.commands)  # type: ignore[attr-defined]
    assert commands == [
        "asr",
        "completion",
        "docling",
        "keys",
        "llm",
        "man",
        "mcp",
        "serve",
        "status",
    ]


def test_help_lists_exactly_the_working_commands() -> None:
    result = invoke(["--help"])
    assert result.exit_code == 0
    head, _, commands = result.stdout.partition("Commands:")
    assert commands, result.stdout
    listed = [line.split()[0] for line in commands.splitlines() if line.startswith("  ")]
    assert listed == [
        "serve",
        "llm",
        "mcp",
        "docling",
        "asr",
        "status",
        "completion",
        "man",
        "keys",
    ]
    assert "--version" in head


def test_no_arguments_shows_help(captured: list[Any]) -> None:
    result = invoke([])
    assert "Commands:" in result.output
    assert "serve" in result.output
    assert captured == []


@pytest.mark.parametrize(
    ("command", "cls", "extra"),
    [
        ("serve", ServerConfig, []),
        ("llm", LlmAgentConfig, ["--reconnect", "-r"]),
        ("docling", DoclingAgentConfig, ["--reconnect", "-r"]),
        ("asr", AsrAgentConfig, ["--reconnect", "-r"]),
    ],
)
def test_command_help_mentions_every_env_var_and_flag(
    command: str, cls: type[Any], extra: list[str]
) -> None:
    result = invoke([command, "--help"])
    assert result.exit_code == 0, result.output
    text = flat(result.stdout)
    for field in attrs.fields(cls):
        env = field.metadata["env"]
        assert f"[env: {env}]" in text, env
        if field.type not in (bool, "bool"):
            assert f"{reference.flag(field)} " in text, field.name
    for flag in extra:
        assert flag in text


def test_serve_help_names_the_core_variables() -> None:
    text = flat(invoke(["serve", "--help"]).stdout)
    for env in (
        "HOST",
        "PORT",
        "API_KEY",
        "CLIENT_KEY",
        "REQUEST_TIMEOUT",
        "MAX_REQUEST_BYTES",
        "HEARTBEAT_INTERVAL",
        "AGENT_DEAD_AFTER",
        "DRAIN_TIMEOUT",
        "LOG_LEVEL",
    ):
        assert f"[env: {env}]" in text, env


def test_help_shows_defaults_but_never_secret_values() -> None:
    text = flat(invoke(["serve", "--help"], {"API_KEY": "s3cret", "CLIENT_KEY": "c-s3cret"}).stdout)
    assert "[default: 8080]" in text
    assert "[default: 127.0.0.1]" in text
    assert "s3cret" not in text


# -- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        (["serve"], {"PORT": "abc"}, "PORT"),
        (["serve"], {"PORT": "65536"}, "PORT"),
        (["serve"], {"REQUEST_TIMEOUT": "forever"}, "REQUEST_TIMEOUT"),
        (["serve"], {"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
        (["serve"], {"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        (["llm"], {"MAX_CONCURRENCY": "0"}, "MAX_CONCURRENCY"),
        (["llm"], {"RECONNECT": "perhaps"}, "RECONNECT"),
        (["llm"], {"MODEL_POLL_INTERVAL": "often"}, "MODEL_POLL_INTERVAL"),
        (["serve", "--port", "70000"], {}, "PORT"),
        (["llm", "--max-concurrency", "0"], {"MAX_CONCURRENCY": "3"}, "MAX_CONCURRENCY"),
    ],
)
def test_bad_value_exits_2_naming_the_variable(
    captured: list[Any], args: list[str], env: dict[str, str], variable: str
) -> None:
    result = invoke(args, env)
    assert result.exit_code == 2, result.output
    assert captured == []
    message = result.stderr.strip()
    assert message.startswith(f"nfrx: configuration error: {variable}: "), message
    assert len(message.splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--port", "abc"],
        ["llm", "--max-concurrency", "many"],
        ["serve", "--no-such-flag"],
        ["serve", "extra-argument"],
    ],
)
def test_bad_flag_exits_2(captured: list[Any], args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert captured == []
    assert "Usage:" in result.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"PORT": "abc"}, "PORT"), ({"MAX_CONCURRENCY": "0"}, "MAX_CONCURRENCY")],
)
def test_bad_value_in_a_real_process(env: dict[str, str], variable: str) -> None:
    command = "serve" if variable == "PORT" else "llm"
    result = subprocess.run(
        [sys.executable, "-m", "nfrx", command],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"nfrx: configuration error: {variable}: "), result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


# -- the config the library receives ------------------------------------------------------------


def test_serve_defaults(captured: list[Any]) -> None:
    result = invoke(["serve"])
    assert result.exit_code == 0, result.output
    assert captured == [ServerConfig()]


def test_serve_env_overrides_defaults(captured: list[Any]) -> None:
    env = {
        "HOST": "0.0.0.0",
        "PORT": "9001",
        "API_KEY": "ak",
        "CLIENT_KEY": "ck",
        "REQUEST_TIMEOUT": "2m",
        "MAX_REQUEST_BYTES": "4096",
        "HEARTBEAT_INTERVAL": "0.5",
        "AGENT_DEAD_AFTER": "3s",
        "DRAIN_TIMEOUT": "10",
        "LOG_LEVEL": "warning",
    }
    result = invoke(["serve"], env)
    assert result.exit_code == 0, result.output
    assert captured == [
        ServerConfig(
            host="0.0.0.0",
            port=9001,
            api_key="ak",
            client_key="ck",
            request_timeout=120.0,
            max_request_bytes=4096,
            heartbeat_interval=0.5,
            agent_dead_after=3.0,
            drain_timeout=10.0,
            log_level="warning",
        )
    ]


def test_serve_flags_override_env(captured: list[Any]) -> None:
    env = {
        "HOST": "0.0.0.0",
        "PORT": "9001",
        "API_KEY": "env-ak",
        "CLIENT_KEY": "env-ck",
        "REQUEST_TIMEOUT": "120",
        "HEARTBEAT_INTERVAL": "7",
        "LOG_LEVEL": "warning",
    }
    args = [
        "serve",
        "--host",
        "127.0.0.2",
        "--port",
        "9002",
        "--api-key",
        "flag-ak",
        "--client-key",
        "flag-ck",
        "--request-timeout",
        "30",
        "--max-request-bytes",
        "100",
        "--agent-dead-after",
        "4.5",
        "--drain-timeout",
        "-1",
        "--log-level",
        "debug",
    ]
    result = invoke(args, env)
    assert result.exit_code == 0, result.output
    assert captured == [
        ServerConfig(
            host="127.0.0.2",
            port=9002,
            api_key="flag-ak",
            client_key="flag-ck",
            request_timeout=30.0,
            max_request_bytes=100,
            heartbeat_interval=7.0,  # no flag: from the environment
            agent_dead_after=4.5,
            drain_timeout=-1.0,
            log_level="debug",
        )
    ]


def test_serve_partial_flags_keep_env_for_the_rest(captured: list[Any]) -> None:
    result = invoke(["serve", "--port", "0"], {"PORT": "9001", "API_KEY": "ak"})
    assert result.exit_code == 0, result.output
    (config,) = captured
    assert config.port == 0
    assert config.api_key == "ak"
    assert config.host == "127.0.0.1"


def test_llm_defaults(captured: list[Any]) -> None:
    result = invoke(["llm"])
    assert result.exit_code == 0, result.output
    assert captured == [LlmAgentConfig()]
    assert captured[0].reconnect is False


@pytest.mark.parametrize(
    ("command", "cls", "env", "expected"),
    [
        ("docling", DoclingAgentConfig, {}, {}),
        (
            "docling",
            DoclingAgentConfig,
            {"DOC_BASE_URL": "http://d:1", "DOC_API_KEY": "dk", "MAX_CONCURRENCY": "3"},
            {"doc_base_url": "http://d:1", "doc_api_key": "dk", "max_concurrency": 3},
        ),
        ("asr", AsrAgentConfig, {}, {}),
        (
            "asr",
            AsrAgentConfig,
            {"ASR_BASE_URL": "http://a:2/v1", "ASR_API_KEY": "ak", "CLIENT_ID": "x"},
            {"asr_base_url": "http://a:2/v1", "asr_api_key": "ak", "client_id": "x"},
        ),
    ],
)
def test_docling_and_asr_configs(
    captured: list[Any],
    command: str,
    cls: type[Any],
    env: dict[str, str],
    expected: dict[str, Any],
) -> None:
    result = invoke([command], env)
    assert result.exit_code == 0, result.output
    assert captured == [cls(**expected)]
    assert captured[0].server_url == f"ws://127.0.0.1:8080/api/{command}/connect"


def test_llm_env_overrides_defaults(captured: list[Any]) -> None:
    env = {
        "SERVER_URL": "ws://gw.test:1/api/llm/connect",
        "CLIENT_KEY": "ck",
        "CLIENT_ID": "id-7",
        "CLIENT_NAME": "box",
        "COMPLETION_BASE_URL": "http://127.0.0.1:9/v1",
        "COMPLETION_API_KEY": "bk",
        "MAX_CONCURRENCY": "5",
        "MODEL_POLL_INTERVAL": "30s",
        "RECONNECT": "true",
        "REQUEST_TIMEOUT": "1h",
        "DRAIN_TIMEOUT": "0",
        "LOG_LEVEL": "error",
    }
    result = invoke(["llm"], env)
    assert result.exit_code == 0, result.output
    assert captured == [
        LlmAgentConfig(
            server_url="ws://gw.test:1/api/llm/connect",
            client_key="ck",
            client_id="id-7",
            client_name="box",
            completion_base_url="http://127.0.0.1:9/v1",
            completion_api_key="bk",
            max_concurrency=5,
            model_poll_interval=30.0,
            reconnect=True,
            request_timeout=3600.0,
            drain_timeout=0.0,
            log_level="error",
        )
    ]


def test_llm_flags_override_env(captured: list[Any]) -> None:
    env = {
        "SERVER_URL": "ws://env.test/api/llm/connect",
        "CLIENT_KEY": "env-ck",
        "CLIENT_ID": "env-id",
        "CLIENT_NAME": "env-name",
        "COMPLETION_BASE_URL": "http://env.test/v1",
        "COMPLETION_API_KEY": "env-bk",
        "MAX_CONCURRENCY": "5",
        "MODEL_POLL_INTERVAL": "30",
        "RECONNECT": "false",
        "REQUEST_TIMEOUT": "100",
        "DRAIN_TIMEOUT": "20",
        "LOG_LEVEL": "error",
    }
    args = [
        "llm",
        "--server-url",
        "ws://flag.test/api/llm/connect",
        "--client-key",
        "flag-ck",
        "--client-id",
        "flag-id",
        "--client-name",
        "flag-name",
        "--completion-base-url",
        "http://flag.test/v1",
        "--completion-api-key",
        "flag-bk",
        "--max-concurrency",
        "2",
        "--model-poll-interval",
        "1.5",
        "-r",
        "--request-timeout",
        "9",
        "--drain-timeout",
        "-1",
        "--log-level",
        "debug",
    ]
    result = invoke(args, env)
    assert result.exit_code == 0, result.output
    assert captured == [
        LlmAgentConfig(
            server_url="ws://flag.test/api/llm/connect",
            client_key="flag-ck",
            client_id="flag-id",
            client_name="flag-name",
            completion_base_url="http://flag.test/v1",
            completion_api_key="flag-bk",
            max_concurrency=2,
            model_poll_interval=1.5,
            reconnect=True,
            request_timeout=9.0,
            drain_timeout=-1.0,
            log_level="debug",
        )
    ]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["llm"], {}, False),
        (["llm"], {"RECONNECT": "1"}, True),
        (["llm"], {"RECONNECT": "off"}, False),
        (["llm", "-r"], {}, True),
        (["llm", "--reconnect"], {"RECONNECT": "no"}, True),
    ],
)
def test_llm_reconnect_sources(
    captured: list[Any], args: list[str], env: dict[str, str], expected: bool
) -> None:
    result = invoke(args, env)
    assert result.exit_code == 0, result.output
    assert captured[0].reconnect is expected


def test_llm_empty_flag_overrides_env_key(captured: list[Any]) -> None:
    result = invoke(["llm", "--client-key", ""], {"CLIENT_KEY": "env-ck"})
    assert result.exit_code == 0, result.output
    assert captured[0].client_key == ""


# -- a port that is taken -----------------------------------------------------------------------


def serve_on_a_taken_port() -> tuple[int, subprocess.CompletedProcess[str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "nfrx", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=clean_env({"API_KEY": "ak", "CLIENT_KEY": "ck"}),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return port, result


def test_serve_on_a_taken_port_fails() -> None:
    _, result = serve_on_a_taken_port()
    assert result.returncode != 0
    assert "Address already in use" in result.stderr
    assert "listening on" not in result.stderr


def test_serve_on_a_taken_port_says_so_in_one_line() -> None:
    port, result = serve_on_a_taken_port()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nfrx serve: cannot listen on 127.0.0.1:{port}: "), result.stderr


# -- durations: one parser for flags, environment and config files ------------------------------

DURATIONS = [("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2.5", 2.5)]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_a_duration_reads_the_same_from_flag_env_and_file(
    captured: list[Any], tmp_path: Path, text: str, seconds: float
) -> None:
    file = tmp_path / "llm.yaml"
    file.write_text(f"request_timeout: {text}\n", encoding="utf-8")
    sources = [
        (["llm", "--request-timeout", text], {}),
        (["llm"], {"REQUEST_TIMEOUT": text}),
        (["llm", "--config", str(file)], {}),
    ]
    for args, env in sources:
        result = invoke(args, env)
        assert result.exit_code == 0, (args, env, result.output)
    assert [config.request_timeout for config in captured] == [seconds] * 3


BAD_DURATION = "'forever' is not a duration (examples: 30, 1.5, 90s, 5m, 1h30m)"


def test_a_bad_duration_flag_names_the_flag_and_says_why(captured: list[Any]) -> None:
    result = invoke(["serve", "--request-timeout", "forever"])
    assert result.exit_code == 2
    assert captured == []
    assert "Usage:" in result.stderr
    assert f"Invalid value for '--request-timeout': {BAD_DURATION}" in flat(result.stderr)


def test_a_bad_duration_in_env_or_file_says_the_same(captured: list[Any], tmp_path: Path) -> None:
    file = tmp_path / "server.yaml"
    file.write_text("request_timeout: forever\n", encoding="utf-8")
    from_env = invoke(["serve"], {"REQUEST_TIMEOUT": "forever"})
    from_file = invoke(["serve", "--config", str(file)])
    assert (from_env.exit_code, from_file.exit_code) == (2, 2)
    assert captured == []
    assert from_env.stderr == f"nfrx: configuration error: REQUEST_TIMEOUT: {BAD_DURATION}\n"
    assert from_file.stderr == (
        f"nfrx: configuration error: {file}: request_timeout: {BAD_DURATION}\n"
    )


@pytest.mark.parametrize(("command", "cls"), reference.COMMANDS)
def test_help_calls_every_duration_a_duration(command: str, cls: type[Any]) -> None:
    kinds = values.kinds(cls)
    text = flat(invoke([command, "--help"]).stdout)
    assert "A DURATION is a number of seconds (30, 1.5) or a number with units" in text
    for field in attrs.fields(cls):
        spelling = reference.flag(field)
        if kinds[field.name] is values.DURATION:
            assert f"{spelling} DURATION " in text, field.name
        else:
            assert f"{spelling} DURATION " not in text, field.name
    if command == "serve":
        assert "--llm-min-score <float> " in text  # a score, not a duration


def test_a_score_is_a_number_not_a_duration(captured: list[Any]) -> None:
    assert invoke(["serve", "--llm-min-score", "0.6"]).exit_code == 0
    assert captured[0].llm_min_score == 0.6
    result = invoke(["serve"], {"LLM_MIN_SCORE": "1m"})
    assert result.exit_code == 2
    assert result.stderr == "nfrx: configuration error: LLM_MIN_SCORE: '1m' is not a number\n"


# -- lists: parsed once, the same from every source ---------------------------------------------


def test_a_list_reads_the_same_from_flag_env_and_file(captured: list[Any], tmp_path: Path) -> None:
    file = tmp_path / "server.yaml"
    file.write_text("allowed_origins: [https://a.example, '*']\n", encoding="utf-8")
    text = "https://a.example, *"
    for args, env in [
        (["serve", "--allowed-origins", text], {}),
        (["serve"], {"ALLOWED_ORIGINS": text}),
        (["serve", "--config", str(file)], {}),
    ]:
        assert invoke(args, env).exit_code == 0, (args, env)
    assert [config.allowed_origins for config in captured] == [("https://a.example", "*")] * 3


def test_list_defaults_and_empty_values(captured: list[Any]) -> None:
    assert invoke(["serve"], {"API_HTTP_ROLES": " , "}).exit_code == 0
    assert invoke(["serve", "--plugins", "LLM, asr"]).exit_code == 0
    assert (captured[0].plugins, captured[0].api_http_roles) == (("all",), ())
    assert captured[1].plugins == ("LLM", "asr")
    assert "[default: all] [env: PLUGINS]" in flat(invoke(["serve", "--help"]).stdout)


# -- one completion mechanism -------------------------------------------------------------------


def test_typers_own_completion_options_are_gone() -> None:
    assert "completion" not in invoke(["--help"]).stdout.partition("Commands:")[0]
    result = invoke(["--install-completion"])
    assert result.exit_code == 2
    assert "No such option: --install-completion" in result.stderr


def test_an_old_key_in_a_config_file_is_one_warning_line(
    captured: list[Any], tmp_path: Path
) -> None:
    file = tmp_path / "server.yaml"
    file.write_text("mcp_max_concurrency_per_client: 4\n", encoding="utf-8")
    result = invoke(["serve", "--config", str(file)])
    assert result.exit_code == 0, result.output
    assert captured[0].mcp_max_concurrency_per_client == 4
    assert result.stderr == (
        f"nfrx: warning: {file}: key 'mcp_max_concurrency_per_client' is deprecated, "
        "use 'broker_max_concurrency_per_client'\n"
    )
