"""YAML config files in the loader: precedence, the system default file, typing and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from nfrx.cli.serve import CHECKS as SERVE_CHECKS
from nfrx.config.files import default_path
from nfrx.config.load import ConfigDeprecation, ConfigError, load, masked, render
from nfrx.config.model import AgentConfig, LlmAgentConfig, ServerConfig
from nfrx.config.reference import COMMANDS


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {}, "/etc/nfrx/server.yaml"),
        ("darwin", {}, "/Library/Application Support/nfrx/server.yaml"),
        ("win32", {"ProgramData": "D:\\Data"}, "D:\\Data/nfrx/server.yaml"),
        ("win32", {}, "C:\\ProgramData/nfrx/server.yaml"),
    ],
)
def test_default_path(platform: str, environ: dict[str, str], expected: str) -> None:
    assert str(default_path("server", platform=platform, environ=environ)) == expected


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", "port: 1001\nhost: 0.0.0.0\napi_key: from-file\n")
    env = {"CONFIG_FILE": str(file), "PORT": "1002", "API_KEY": "from-env"}
    config = load(ServerConfig, {"api_key": "from-flag"}, env)
    assert config.host == "0.0.0.0"  # file over default
    assert config.port == 1002  # env over file
    assert config.api_key == "from-flag"  # flag over env
    assert config.request_timeout == 600.0  # default
    assert config.config_file == str(file)


def test_flag_names_the_file_over_the_environment(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "port: 1\n")
    b = write(tmp_path / "b.yaml", "port: 2\n")
    assert load(ServerConfig, {"config_file": str(b)}, {"CONFIG_FILE": str(a)}).port == 2


def test_system_file_is_used_only_if_it_exists(tmp_path: Path) -> None:
    system = tmp_path / "server.yaml"
    assert load(ServerConfig, {}, {}, default_file=system) == ServerConfig()
    write(system, "llm_queue_size: 3\n")
    config = load(ServerConfig, {}, {}, default_file=system)
    assert config.llm_queue_size == 3
    assert config.config_file == str(system)
    # An explicit (even empty) CONFIG_FILE replaces it.
    assert load(ServerConfig, {}, {"CONFIG_FILE": ""}, default_file=system).llm_queue_size == 100
    with pytest.raises(ConfigError, match="no such config file"):
        load(ServerConfig, {}, {"CONFIG_FILE": str(tmp_path / "gone.yaml")}, default_file=system)


def test_every_type_from_yaml(tmp_path: Path) -> None:
    file = write(
        tmp_path / "llm.yaml",
        "server_url: wss://gw.example/api/llm/connect\n"
        "max_concurrency: 3\n"
        "reconnect: true\n"
        "request_timeout: 90s\n"
        "drain_timeout: -1\n"
        "model_poll_interval: 2.5\n"
        "completion_api_key: 'sk-1'\n",
    )
    config = load(LlmAgentConfig, {}, {"CONFIG_FILE": str(file)})
    assert config.server_url == "wss://gw.example/api/llm/connect"
    assert config.max_concurrency == 3
    assert config.reconnect is True
    assert config.request_timeout == 90.0
    assert config.drain_timeout == -1.0
    assert config.model_poll_interval == 2.5
    assert config.completion_api_key == "sk-1"


def test_lists_for_comma_settings(tmp_path: Path) -> None:
    file = write(
        tmp_path / "s.yaml", "allowed_origins: [https://a.example, '*']\napi_http_roles: [a, b]\n"
    )
    config = load(ServerConfig, {}, {"CONFIG_FILE": str(file)})
    assert config.allowed_origins == ("https://a.example", "*")
    assert config.api_http_roles == ("a", "b")
    # A comma-separated string works too, as in the environment.
    same = write(tmp_path / "same.yaml", "allowed_origins: 'https://a.example, *'\n")
    assert load(ServerConfig, {}, {"CONFIG_FILE": str(same)}).allowed_origins == (
        "https://a.example",
        "*",
    )
    bad = write(tmp_path / "bad.yaml", "host: [a, b]\n")
    with pytest.raises(ConfigError, match=r"host: expected a string \(quote it\), got a list"):
        load(ServerConfig, {}, {"CONFIG_FILE": str(bad)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config_file: x.yaml\n", "unknown key 'config_file'"),
        ("completion_base_url: x\n", "unknown key 'completion_base_url'"),
        ("port: true\n", "port: expected a whole number, got a boolean (True)"),
        ("port:\n", "port: expected a whole number, got nothing"),
        ("request_timeout: .inf\n", "request_timeout: expected a finite number"),
        ("llm_queue_size: -1\n", "llm_queue_size: must be at least 0, got -1"),
        ("client_key: [a]\n", "client_key: expected a string (quote it), got a list"),
        ("plugins: [llm, jobs]\n", "plugins: unknown plugin 'jobs'"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "s.yaml", text)
    with pytest.raises(ConfigError) as caught:
        # With nfrx serve's own checks: PLUGINS is checked against the list of plugins there.
        load(ServerConfig, {}, {"CONFIG_FILE": str(file)}, checks=SERVE_CHECKS)
    assert str(caught.value).startswith(f"{file}: "), caught.value
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_agent_config_without_a_command_has_no_system_file() -> None:
    assert load(AgentConfig, {}, {}) == AgentConfig()


def test_render_masks_secrets_and_reloads(tmp_path: Path) -> None:
    config = load(ServerConfig, {"api_key": "top-secret", "port": 1234}, {})
    text = render(config)
    assert "top-secret" not in text
    assert text.startswith("# config file: none\n")
    data = yaml.safe_load(text)
    assert data["api_key"] == "***"
    assert data["client_key"] == ""
    # The printed settings are a valid config file.
    again = load(ServerConfig, {}, {"CONFIG_FILE": str(write(tmp_path / "p.yaml", text))})
    assert again.port == 1234


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"tls_cert": "c.pem"}, "TLS_KEY: missing"),
        ({"tls_key": "k.pem"}, "TLS_CERT: missing"),
        (
            {"plugins": ("llm", "nope")},
            "PLUGINS: unknown plugin 'nope' (known: llm, mcp, docling, asr; or all, none)",
        ),
        ({"plugins": ()}, "PLUGINS: empty"),
        ({"log_format": "xml"}, "LOG_FORMAT: 'xml' is not one of text, json"),
        (
            {"llm_queue_event_style": "loud"},
            "LLM_QUEUE_EVENT_STYLE: 'loud' is not one of comments, events",
        ),
        ({"allowed_origins": ("https://a/b",)}, "ALLOWED_ORIGINS: 'https://a/b' is not an origin"),
    ],
)
def test_server_checks(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(ServerConfig, flags, {}, checks=SERVE_CHECKS)
    assert str(caught.value).startswith(message), caught.value


def test_settings_alone_know_no_plugin_names() -> None:
    """PLUGINS is the composition's to check (settings import no plugin): without nfrx serve's
    checks any name loads, and nothing else changes."""
    assert load(ServerConfig, {"plugins": ("nope",)}, {}).plugins == ("nope",)


@pytest.mark.parametrize(
    ("plugins", "enabled"),
    [
        (("all",), ("llm", "mcp", "docling", "asr")),
        (("none",), ()),
        (("llm",), ("llm",)),
        (("asr", "LLM"), ("llm", "asr")),
        (("LLM", "all"), ("llm", "mcp", "docling", "asr")),
    ],
)
def test_enabled_plugins(plugins: tuple[str, ...], enabled: tuple[str, ...]) -> None:
    from nfrx.config.load import enabled_plugins

    assert enabled_plugins(plugins, ("llm", "mcp", "docling", "asr")) == enabled


# -- keys are the snake_case of the environment names -------------------------------------------


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_every_key_is_the_snake_case_of_its_variable(
    tmp_path: Path, command: str, cls: type[Any]
) -> None:
    # Each setting given in the file under its documented key, with its default value.
    defaults = masked(cls())
    defaults.pop("config_file", None)
    for field in attrs.fields(cls):
        if field.name != "config_file":
            assert field.metadata["env"].lower() in defaults, field.name
    file = write(tmp_path / f"{command}.yaml", yaml.safe_dump(defaults))
    loaded = load(cls, {}, {"CONFIG_FILE": str(file)})
    assert attrs.evolve(loaded, config_file="") == cls()


def test_broker_settings_take_their_variable_names(tmp_path: Path) -> None:
    file = write(
        tmp_path / "s.yaml",
        "broker_max_req_bytes: 2048\nbroker_max_resp_bytes: 4096\n"
        "broker_max_concurrency_per_client: 3\n",
    )
    config = load(ServerConfig, {}, {"CONFIG_FILE": str(file)})
    assert (config.mcp_max_req_bytes, config.mcp_max_resp_bytes) == (2048, 4096)
    assert config.mcp_max_concurrency_per_client == 3
    assert "broker_max_req_bytes: 2048\n" in render(config)


def test_the_old_broker_keys_still_work_with_a_warning(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", "mcp_max_req_bytes: 2048\n")
    with pytest.warns(ConfigDeprecation) as caught:
        config = load(ServerConfig, {}, {"CONFIG_FILE": str(file)})
    assert config.mcp_max_req_bytes == 2048
    assert [str(w.message) for w in caught] == [
        f"{file}: key 'mcp_max_req_bytes' is deprecated, use 'broker_max_req_bytes'"
    ]


def test_an_old_and_a_new_key_together_are_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", "mcp_max_req_bytes: 1\nbroker_max_req_bytes: 2\n")
    with pytest.raises(ConfigError) as caught:
        load(ServerConfig, {}, {"CONFIG_FILE": str(file)})
    assert str(caught.value) == (
        f"{file}: 'mcp_max_req_bytes' and 'broker_max_req_bytes' are the same setting: "
        "keep 'broker_max_req_bytes'"
    )


def test_a_check_on_a_file_value_names_the_file_and_the_key(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", "broker_max_req_bytes: 0\n")
    with pytest.raises(ConfigError) as caught:
        load(ServerConfig, {}, {"CONFIG_FILE": str(file)})
    assert str(caught.value) == f"{file}: broker_max_req_bytes: must be a positive number, got 0"
