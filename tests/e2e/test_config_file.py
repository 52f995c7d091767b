"""Config files, --print-config, PLUGINS and logging, through real ``python -m nfrx`` processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from tests.e2e.harness import clean_env, run_agent, run_server
from tests.e2e.test_auth import rejected_upgrade
from tests.fixtures.backend import FixtureBackend

pytestmark = pytest.mark.e2e


def nfrx(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nfrx", *args],
        env=clean_env(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# config file: ")
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nfrx: configuration error: "), lines[0]
    return lines[0].removeprefix("nfrx: configuration error: ")


# -- precedence and --print-config --------------------------------------------------------------


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    config = write(
        tmp_path / "server.yaml",
        "port: 9001\nllm_queue_size: 7\nllm_queue_timeout: 2m\napi_key: file-key\n"
        "allowed_origins: [https://a.example, https://b.example]\nllm_queue_events: false\n",
    )
    only_file = printed(nfrx(["serve", "--config", str(config), "--print-config"]))
    assert only_file["port"] == 9001
    assert only_file["llm_queue_size"] == 7
    assert only_file["llm_queue_timeout"] == 120.0
    assert only_file["llm_queue_events"] is False
    assert only_file["allowed_origins"] == ["https://a.example", "https://b.example"]
    assert only_file["api_key"] == "***"
    assert only_file["host"] == "127.0.0.1"  # default
    # The environment overrides the file, flags override both; CONFIG_FILE names the file too.
    env = {"CONFIG_FILE": str(config), "PORT": "9002", "LLM_QUEUE_SIZE": "8"}
    result = nfrx(["serve", "--port", "9003", "--print-config"], env)
    layered = printed(result)
    assert layered["port"] == 9003
    assert layered["llm_queue_size"] == 8
    assert layered["llm_queue_timeout"] == 120.0
    assert result.stdout.splitlines()[0] == f"# config file: {config}"
    assert "file-key" not in result.stdout + result.stderr


def test_llm_print_config_masks_secrets(tmp_path: Path) -> None:
    config = write(
        tmp_path / "llm.yaml",
        "completion_base_url: http://127.0.0.1:9/v1\ncompletion_api_key: sk-backend\n"
        "max_concurrency: 4\nreconnect: true\n",
    )
    result = nfrx(["llm", "--print-config"], {"CONFIG_FILE": str(config), "CLIENT_KEY": "ck-9"})
    values = printed(result)
    assert values["completion_base_url"] == "http://127.0.0.1:9/v1"
    assert values["max_concurrency"] == 4
    assert values["reconnect"] is True
    assert values["completion_api_key"] == values["client_key"] == "***"
    assert "sk-backend" not in result.stdout
    assert "ck-9" not in result.stdout


def test_print_config_without_a_file() -> None:
    result = nfrx(["serve", "--print-config"], {"CONFIG_FILE": ""})
    values = printed(result)
    assert result.stdout.splitlines()[0] == "# config file: none"
    assert values["port"] == 8080
    assert values["plugins"] == ["all"]
    assert values["broker_max_req_bytes"] == 10 * 1024 * 1024  # keys: the variables' snake_case
    assert "mcp_max_req_bytes" not in values


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prot: 9000\n", "unknown key 'prot' (did you mean 'port'?)"),
        ("API_KEY: x\n", "unknown key 'API_KEY' (did you mean 'api_key'?)"),
        ("port: many\n", "port: expected a whole number, got a string ('many')"),
        ("port: 70000\n", "port: 70000 is not a TCP port"),
        ("llm_queue_events: maybe\n", "llm_queue_events: expected true or false"),
        ("request_timeout: soon\n", "request_timeout: 'soon' is not a duration"),
        ("api_key: 12345\n", "api_key: expected a string (quote it), got a number"),
        ("plugins: [llm, jobs]\n", "plugins: unknown plugin 'jobs'"),
        ("log_format: xml\n", "log_format: 'xml' is not one of text, json"),
        ("allowed_origins: https://a.example/\n", "allowed_origins: 'https://a.example/' is not"),
        ("- port\n", "expected a mapping of settings"),
        ("port: [\n", "not valid YAML"),
    ],
)
def test_bad_file_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path / "server.yaml", text)
    message = one_line_error(nfrx(["serve", "--config", str(config)]))
    assert message.startswith(f"{config}: "), message
    assert expected in message, message
    assert "12345" not in message


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for args, env in (
        (["serve", "--config", str(missing)], {}),
        (["llm"], {"CONFIG_FILE": str(missing)}),
    ):
        message = one_line_error(nfrx(args, env))
        assert message == f"{missing}: no such config file"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PLUGINS": "llm,jobs"}, "PLUGINS: unknown plugin 'jobs'"),
        ({"PLUGINS": ""}, "PLUGINS: empty"),
        ({"LOG_FORMAT": "yaml"}, "LOG_FORMAT: 'yaml' is not one of text, json"),
        ({"ALLOWED_ORIGINS": "app.example"}, "ALLOWED_ORIGINS: 'app.example' is not an origin"),
    ],
)
def test_bad_environment_values(env: dict[str, str], expected: str) -> None:
    assert one_line_error(nfrx(["serve"], env)).startswith(expected)


def test_tls_needs_both_files_and_readable_ones(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    message = one_line_error(nfrx(["serve"], {"TLS_CERT": str(cert_file)}))
    assert message.startswith("TLS_KEY: missing"), message
    message = one_line_error(nfrx(["serve", "--tls-key", str(key_file)]))
    assert message.startswith("TLS_CERT: missing"), message
    missing = tmp_path / "missing.pem"
    message = one_line_error(nfrx(["serve"], {"TLS_CERT": str(missing), "TLS_KEY": str(key_file)}))
    assert message == f"TLS_CERT: cannot read {missing}: No such file or directory"
    other_key = tmp_path / "other.pem"
    ca.issue_cert("other").private_key_pem.write_to_path(str(other_key))
    message = one_line_error(
        nfrx(["serve"], {"TLS_CERT": str(cert_file), "TLS_KEY": str(other_key)})
    )
    assert message.startswith(f"TLS_CERT: cannot use {cert_file} with {other_key}: "), message
    message = one_line_error(nfrx(["llm"], {"CA_FILE": str(missing)}))
    assert message == f"CA_FILE: cannot read {missing}: No such file or directory"
    message = one_line_error(nfrx(["llm"], {"CA_FILE": str(write(tmp_path / "x", "junk\n"))}))
    assert message.startswith("CA_FILE: "), message


# -- a real server from a file ------------------------------------------------------------------


async def test_disabled_plugin_routes_answer_404_json(tmp_path: Path) -> None:
    config = write(tmp_path / "server.yaml", "plugins: none\n")
    async with run_server(env={"CONFIG_FILE": str(config)}) as server:
        await server.proc.wait_for_line(r"listening on .*\(plugins: none\)")
        async with httpx.AsyncClient(timeout=10) as http:
            for method, path in (
                ("GET", "/api/llm/v1/models"),
                ("POST", "/api/llm/v1/chat/completions"),
                ("GET", "/api/llm/"),
            ):
                response = await http.request(
                    method, f"{server.url}{path}", headers=server.headers(), json={}
                )
                assert response.status_code == 404, (path, response.text)
                assert response.json()["error"]["code"] == "plugin_disabled"
            assert (await http.get(f"{server.url}/healthz")).status_code == 200
        headers = [(b"authorization", f"Bearer {server.client_key}".encode())]
        status, body = await rejected_upgrade(server.connect_url, headers)
        assert status == 404
        assert body["error"]["code"] == "plugin_disabled"


async def test_enabled_plugin_by_name(tmp_path: Path, backend: FixtureBackend) -> None:
    config = write(tmp_path / "server.yaml", "plugins: [llm]\n")
    async with run_server(env={"CONFIG_FILE": str(config)}) as server:
        await server.proc.wait_for_line(r"\(plugins: llm\)")
        async with run_agent(server, backend.base_url), httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{server.api_base}/models", headers=server.headers())
        assert response.status_code == 200


# -- logging ------------------------------------------------------------------------------------


async def test_json_logs_are_one_object_per_line(backend: FixtureBackend) -> None:
    env = {"LOG_FORMAT": "json"}
    async with run_server(env=env) as server, run_agent(server, backend.base_url, env=env) as agent:
        pass
    for proc in (server.proc, agent):
        lines = [line for line in proc.lines if line.strip()]
        assert lines, proc.output()
        for line in lines:
            entry = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(entry), line
    messages = [json.loads(line)["message"] for line in server.proc.lines if line.strip()]
    assert any(m.startswith("nfrx serve listening on http://127.0.0.1:") for m in messages)


async def test_agent_log_dir_gets_a_log_file(tmp_path: Path, backend: FixtureBackend) -> None:
    log_dir = tmp_path / "logs" / "nested"
    async with run_server(client_key="ck-secret-1") as server:
        env = {"LOG_DIR": str(log_dir), "COMPLETION_API_KEY": "sk-backend-1"}
        async with run_agent(server, backend.base_url, env=env):
            pass
    text = (log_dir / "nfrx-llm.log").read_text(encoding="utf-8")
    assert "connected to " in text
    assert text.splitlines()[0][:4].isdigit()  # full date on every file line
    assert "ck-secret-1" not in text
    assert "sk-backend-1" not in text


def test_log_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "")
    env = {"LOG_DIR": str(blocker / "logs"), "SERVER_URL": "ws://127.0.0.1:9/api/llm/connect"}
    message = one_line_error(nfrx(["llm"], env))
    assert message.startswith("LOG_DIR: cannot write "), message
