"""Configuration loading: durations, types, defaults < environment < flags, errors, masking."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from nfrx.config import values
from nfrx.config.load import ConfigError, environment, load, masked, parse_duration
from nfrx.config.model import AgentConfig, LlmAgentConfig, ServerConfig, setting
from nfrx.config.reference import COMMANDS

# -- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("2m30s", 150.0),
        ("250ms", 0.25),
        ("1s500ms", 1.5),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("-1", -1.0),
        ("-5m", -300.0),
        ("  45s  ", 45.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "5x", "m", "s5", "1h 30m", "5 m", "1.2.3", "30sec", "1m-5s", "-", "5mm"],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_duration_error_shows_examples() -> None:
    with pytest.raises(ValueError, match=r"'soon' is not a duration \(examples: .*90s.*5m"):
        parse_duration("soon")


# -- load: sources and precedence ---------------------------------------------------------------


def _env_names(cls: type[Any]) -> list[str]:
    return [f.metadata["env"] for f in attrs.fields(cls)]


def test_defaults_without_env_or_flags() -> None:
    config = load(ServerConfig, {}, {})
    assert config == ServerConfig()
    assert config.host == "127.0.0.1"
    assert config.port == 8080
    assert config.api_key == ""
    assert config.request_timeout == 600.0
    agent = load(LlmAgentConfig, {}, {})
    assert agent == LlmAgentConfig()
    assert agent.reconnect is False
    assert agent.max_concurrency == 1


def test_env_overrides_defaults() -> None:
    env = {
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "API_KEY": "ak",
        "CLIENT_KEY": "ck",
        "REQUEST_TIMEOUT": "5m",
        "MAX_REQUEST_BYTES": "1024",
        "HEARTBEAT_INTERVAL": "250ms",
        "AGENT_DEAD_AFTER": "1.5",
        "DRAIN_TIMEOUT": "1h30m",
        "LOG_LEVEL": "debug",
    }
    config = load(ServerConfig, {}, env)
    assert config == ServerConfig(
        host="0.0.0.0",
        port=9000,
        api_key="ak",
        client_key="ck",
        request_timeout=300.0,
        max_request_bytes=1024,
        heartbeat_interval=0.25,
        agent_dead_after=1.5,
        drain_timeout=5400.0,
        log_level="debug",
    )


def test_flags_override_env() -> None:
    env = {"PORT": "9000", "API_KEY": "from-env", "REQUEST_TIMEOUT": "30"}
    config = load(ServerConfig, {"port": 7000, "api_key": "from-flag"}, env)
    assert config.port == 7000
    assert config.api_key == "from-flag"
    assert config.request_timeout == 30.0  # no flag: the environment still applies


def test_flag_none_means_not_given() -> None:
    config = load(ServerConfig, {"port": None, "host": None}, {"PORT": "9000"})
    assert config.port == 9000
    assert config.host == "127.0.0.1"


def test_false_flag_overrides_true_env() -> None:
    config = load(LlmAgentConfig, {"reconnect": False}, {"RECONNECT": "true"})
    assert config.reconnect is False


def test_empty_string_flag_overrides_env() -> None:
    # An explicitly empty value is a value (for example --api-key '' to open the API).
    config = load(ServerConfig, {"api_key": ""}, {"API_KEY": "secret"})
    assert config.api_key == ""


def test_empty_env_value_is_used() -> None:
    config = load(LlmAgentConfig, {}, {"CLIENT_KEY": "", "CLIENT_NAME": ""})
    assert config.client_key == ""
    assert config.client_name == ""


def test_unknown_flags_and_env_are_ignored() -> None:
    config = load(ServerConfig, {"nonsense": 1, "ctx": object()}, {"NONSENSE": "x"})
    assert config == ServerConfig()


def test_load_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _env_names(LlmAgentConfig):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVER_URL", "ws://example.test/api/llm/connect")
    monkeypatch.setenv("MAX_CONCURRENCY", "4")
    config = load(LlmAgentConfig, {})
    assert config.server_url == "ws://example.test/api/llm/connect"
    assert config.max_concurrency == 4


def test_agent_settings_from_env() -> None:
    env = {
        "SERVER_URL": "wss://gw.example/api/llm/connect",
        "CLIENT_KEY": "ck",
        "CLIENT_ID": "id-1",
        "CLIENT_NAME": "box",
        "MAX_CONCURRENCY": "3",
        "RECONNECT": "yes",
        "REQUEST_TIMEOUT": "90s",
        "DRAIN_TIMEOUT": "-1",
        "LOG_LEVEL": "WARNING",
        "COMPLETION_BASE_URL": "http://127.0.0.1:1234/v1",
        "COMPLETION_API_KEY": "bk",
        "MODEL_POLL_INTERVAL": "2m",
    }
    config = load(LlmAgentConfig, {}, env)
    assert config == LlmAgentConfig(
        server_url="wss://gw.example/api/llm/connect",
        client_key="ck",
        client_id="id-1",
        client_name="box",
        max_concurrency=3,
        reconnect=True,
        request_timeout=90.0,
        drain_timeout=-1.0,
        log_level="WARNING",
        completion_base_url="http://127.0.0.1:1234/v1",
        completion_api_key="bk",
        model_poll_interval=120.0,
    )


def test_every_setting_has_an_env_var_and_help() -> None:
    for cls in (ServerConfig, AgentConfig, LlmAgentConfig):
        names = _env_names(cls)
        assert len(names) == len(set(names)), cls
        for field in attrs.fields(cls):
            assert field.metadata["env"].isupper()
            assert field.metadata["help"]


# -- booleans -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "True", "yes", "Yes", "on", "ON", " true "])
def test_bool_true(text: str) -> None:
    assert load(LlmAgentConfig, {}, {"RECONNECT": text}).reconnect is True


@pytest.mark.parametrize("text", ["0", "false", "FALSE", "no", "off", "Off", "", "  "])
def test_bool_false(text: str) -> None:
    assert load(LlmAgentConfig, {}, {"RECONNECT": text}).reconnect is False


@pytest.mark.parametrize("text", ["maybe", "2", "y", "enabled", "truee"])
def test_bool_invalid(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^RECONNECT: .* is not a boolean"):
        load(LlmAgentConfig, {}, {"RECONNECT": text})


# -- errors name the variable -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "env", "message"),
    [
        (ServerConfig, {"PORT": "abc"}, r"^PORT: 'abc' is not a whole number"),
        (ServerConfig, {"PORT": "80.5"}, r"^PORT: '80.5' is not a whole number"),
        (ServerConfig, {"PORT": "70000"}, r"^PORT: 70000 is not a TCP port"),
        (ServerConfig, {"PORT": "-1"}, r"^PORT: -1 is not a TCP port"),
        (ServerConfig, {"MAX_REQUEST_BYTES": "lots"}, r"^MAX_REQUEST_BYTES: "),
        (ServerConfig, {"MAX_REQUEST_BYTES": "0"}, r"^MAX_REQUEST_BYTES: must be a positive"),
        (ServerConfig, {"REQUEST_TIMEOUT": "soon"}, r"^REQUEST_TIMEOUT: 'soon' is not a duration"),
        (ServerConfig, {"REQUEST_TIMEOUT": "0"}, r"^REQUEST_TIMEOUT: must be a positive"),
        (ServerConfig, {"HEARTBEAT_INTERVAL": "-1"}, r"^HEARTBEAT_INTERVAL: must be a positive"),
        (ServerConfig, {"AGENT_DEAD_AFTER": "0s"}, r"^AGENT_DEAD_AFTER: must be a positive"),
        (ServerConfig, {"DRAIN_TIMEOUT": "5 minutes"}, r"^DRAIN_TIMEOUT: .* is not a duration"),
        (ServerConfig, {"LOG_LEVEL": "verbose"}, r"^LOG_LEVEL: 'verbose' is not one of"),
        (LlmAgentConfig, {"MAX_CONCURRENCY": "0"}, r"^MAX_CONCURRENCY: must be at least 1, got 0"),
        (LlmAgentConfig, {"MAX_CONCURRENCY": "x"}, r"^MAX_CONCURRENCY: 'x' is not a whole number"),
        (LlmAgentConfig, {"MODEL_POLL_INTERVAL": "1d"}, r"^MODEL_POLL_INTERVAL: "),
        (LlmAgentConfig, {"REQUEST_TIMEOUT": "-5"}, r"^REQUEST_TIMEOUT: must be a positive"),
    ],
)
def test_config_error_names_the_variable(cls: type[Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(cls, {}, env)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_invalid_flag_value_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^PORT: 99999 is not a TCP port"):
        load(ServerConfig, {"port": 99999}, {})
    with pytest.raises(ConfigError, match=r"^MAX_CONCURRENCY: must be at least 1"):
        load(LlmAgentConfig, {"max_concurrency": 0}, {"MAX_CONCURRENCY": "4"})


def test_error_does_not_echo_secrets() -> None:
    # Secrets are strings and never fail conversion; make sure an unrelated error does not
    # carry the other settings along.
    with pytest.raises(ConfigError) as info:
        load(ServerConfig, {}, {"API_KEY": "hunter2", "PORT": "abc"})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "infinity", "1e999"])
def test_parse_duration_rejects_non_finite(text: str) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        parse_duration(text)


@pytest.mark.parametrize("name", ["REQUEST_TIMEOUT", "HEARTBEAT_INTERVAL", "AGENT_DEAD_AFTER"])
@pytest.mark.parametrize("text", ["nan", "inf"])
def test_non_finite_duration_is_a_config_error(name: str, text: str) -> None:
    # NaN slipped through the "> 0" range check and made every deadline NaN.
    with pytest.raises(ConfigError, match=f"^{name}: '{text}' is not a finite number"):
        load(ServerConfig, {}, {name: text})


# -- masked -------------------------------------------------------------------------------------


def test_masked_hides_server_secrets() -> None:
    config = ServerConfig(api_key="ak-secret", client_key="ck-secret", port=9000)
    out = masked(config)
    assert out["api_key"] == "***"
    assert out["client_key"] == "***"
    assert out["port"] == 9000
    assert out["host"] == "127.0.0.1"
    assert "ak-secret" not in repr(out)
    assert "ck-secret" not in repr(out)
    assert set(out) == {f.metadata["env"].lower() for f in attrs.fields(ServerConfig)}


def test_masked_hides_agent_secrets() -> None:
    config = LlmAgentConfig(
        client_key="ck-secret", completion_api_key="bk-secret", client_name="box"
    )
    out = masked(config)
    assert out["client_key"] == "***"
    assert out["completion_api_key"] == "***"
    assert out["client_name"] == "box"
    assert "secret" not in repr(out)


def test_masked_redacts_urls() -> None:
    config = LlmAgentConfig(
        server_url="wss://agent:pw@gw.example/api/llm/connect?ticket=t1",
        completion_base_url="http://user:pass@10.0.0.5:8000/v1?key=k1",
    )
    out = masked(config)
    assert out["server_url"] == "wss://***@gw.example/api/llm/connect?ticket=***"
    assert out["completion_base_url"] == "http://***@10.0.0.5:8000/v1?key=***"
    for secret in ("pw", "pass", "k1", "t1"):
        assert secret not in repr(out)


def test_masked_shows_unset_secrets_as_empty() -> None:
    out = masked(ServerConfig())
    assert out["api_key"] == ""
    assert out["client_key"] == ""


def test_masked_does_not_change_the_config() -> None:
    config = ServerConfig(api_key="ak")
    masked(config)
    assert config.api_key == "ak"


# -- kinds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_every_setting_has_a_kind_and_seconds_are_durations(command: str, cls: type[Any]) -> None:
    # A new duration declared as a plain float would refuse "5m": declare it as Seconds.
    for name, kind in values.kinds(cls).items():
        text = attrs.fields_dict(cls)[name].metadata["help"].lower()
        if kind is values.NUMBER:
            assert "second" not in text, f"{command}: {name} reads like a duration"


def test_a_field_type_without_a_kind_is_refused() -> None:
    @attrs.frozen
    class Odd:
        ratio: complex = setting(1j, env="ODD_RATIO", doc="Not a setting type.")

    with pytest.raises(TypeError, match=r"Odd\.ratio: unsupported setting type"):
        values.kinds(Odd)


def test_redis_addr_is_read_when_redis_url_is_not() -> None:
    assert load(ServerConfig, {}, {"REDIS_ADDR": "h:1"}, default_file=None).redis_url == "h:1"
    both = load(
        ServerConfig, {}, {"REDIS_ADDR": "h:1", "REDIS_URL": "redis://u"}, default_file=None
    )
    assert both.redis_url == "redis://u"


def test_workers_need_redis() -> None:
    with pytest.raises(ConfigError, match=r"^WORKERS: 2 workers need REDIS_URL"):
        load(ServerConfig, {"workers": 2}, {}, default_file=None)
    assert load(ServerConfig, {"workers": 2}, {"REDIS_URL": "h:1"}, default_file=None).workers == 2


def test_a_bad_redis_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"^REDIS_URL: unknown scheme 'http'"):
        load(ServerConfig, {}, {"REDIS_URL": "http://h"}, default_file=None)


@pytest.mark.parametrize("cls", [cls for _, cls in COMMANDS])
def test_a_config_passed_through_the_environment_reads_back_equal(cls: type[Any]) -> None:
    config = load(
        cls,
        {"log_level": "debug"},
        {"REQUEST_TIMEOUT": "1m30s", "ALLOWED_ORIGINS": "https://a.example,https://b.example"}
        if cls is ServerConfig
        else {"REQUEST_TIMEOUT": "1m30s"},
        default_file=None,
    )
    assert load(cls, {}, environment(config), default_file=None) == config
