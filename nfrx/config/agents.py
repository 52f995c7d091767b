"""The agents' settings: what every agent shares (:class:`AgentConfig`) and each command's own
(``nfrx llm``, ``docling``, ``asr``, ``mcp``); how a setting is declared is in
:mod:`nfrx.config.setting`."""

from __future__ import annotations

import socket
import uuid
from typing import ClassVar

import attrs

from nfrx.config.checks import (
    above_zero,
    ca_bundle,
)
from nfrx.config.setting import Section, setting, shared
from nfrx.config.values import Seconds  # noqa: TC001 (the kinds read the annotations at runtime)


def default_client_name() -> str:
    return socket.gethostname() or f"agent-{uuid.uuid4().hex[:8]}"


def default_client_id() -> str:
    # Unique per agent instance: two agents started in the same second never share an id.
    return f"{socket.gethostname() or 'agent'}-{uuid.uuid4().hex[:12]}"


@attrs.frozen(kw_only=True)
class AgentConfig:
    """What every agent (``nfrx llm``, later ``mcp``, ``docling``, ``asr``) shares."""

    server_url: str = setting(
        "ws://127.0.0.1:8080/api/llm/connect",
        env="SERVER_URL",
        doc="WebSocket URL of the server's tunnel endpoint (ws:// or wss://).",
        section=Section.TUNNEL,
    )
    client_key: str = setting(
        "",
        env="CLIENT_KEY",
        doc="Key sent to the server to open the tunnel.",
        secret=True,
        section=Section.TUNNEL,
    )
    client_id: str = setting(
        "",
        env="CLIENT_ID",
        doc="Stable id of this agent (default: hostname plus a random suffix, new each start).",
        section=Section.TUNNEL,
    )
    client_name: str = setting(
        "",
        env="CLIENT_NAME",
        doc="Display name of this agent (default: the hostname).",
        section=Section.TUNNEL,
    )
    max_concurrency: int = setting(
        1,
        env="MAX_CONCURRENCY",
        doc="Requests this agent runs at once.",
        minimum=1,
        section=Section.CAPACITY,
    )
    reconnect: bool = setting(
        False,
        env="RECONNECT",
        doc="Keep retrying when the server is unreachable or the tunnel drops "
        "(1 s x3, 5 s x3, 15 s x3, then every 30 s).",
        flag="--reconnect, -r",
        section=Section.PROCESS,
    )
    request_timeout: Seconds = setting(
        600.0,
        env="REQUEST_TIMEOUT",
        doc="Longest a single backend request may run, in seconds.",
        check=above_zero("seconds"),
        section=Section.PROCESS,
    )
    drain_timeout: Seconds = setting(
        60.0,
        env="DRAIN_TIMEOUT",
        doc="On SIGTERM/SIGINT, seconds to let in-flight requests finish (0: exit at once, "
        "-1: wait as long as they take).",
        section=Section.PROCESS,
    )
    config_file: str = shared("config_file")
    status_addr: str = setting(
        "",
        env="STATUS_ADDR",
        doc="host:port for the local status and control API (GET /status, POST /control/...). "
        "Empty: off.",
        section=Section.PROCESS,
    )
    metrics_port: int = setting(
        0,
        env="METRICS_PORT",
        doc="Port for this agent's /metrics (127.0.0.1). 0: off.",
        minimum=0,
        section=Section.PROCESS,
    )
    ca_file: str = setting(
        "",
        env="CA_FILE",
        doc="PEM CA bundle to verify a wss:// server with (default: the system's CAs).",
        check=ca_bundle,
        section=Section.PROCESS,
    )
    log_format: str = shared("log_format")
    log_dir: str = setting(
        "",
        env="LOG_DIR",
        doc="Also write logs to a rotating file in this directory (created if missing; "
        "nfrx-<command>.log, e.g. nfrx-llm.log; 10 MiB x 5 files).",
        section=Section.PROCESS,
    )
    log_level: str = shared("log_level")


@attrs.frozen(kw_only=True)
class LlmAgentConfig(AgentConfig):
    """``nfrx llm``."""

    config_name: ClassVar[str] = "llm"

    completion_base_url: str = setting(
        "http://127.0.0.1:11434/v1",
        env="COMPLETION_BASE_URL",
        doc="Base URL of the OpenAI-compatible backend (Ollama, llama.cpp, vLLM, ...).",
    )
    completion_api_key: str = setting(
        "",
        env="COMPLETION_API_KEY",
        doc="Bearer key sent to the backend (never the client's key).",
        secret=True,
    )
    model_poll_interval: Seconds = setting(
        60.0,
        env="MODEL_POLL_INTERVAL",
        doc="Seconds between re-reads of the backend's models; changes (an empty list "
        "included) reach the server at once. While the backend does not answer, it is "
        "probed every 2 s at most.",
        positive=True,
        section=Section.CAPACITY,
    )
    embedding_batch_size: int = setting(
        0,
        env="EMBEDDING_BATCH_SIZE",
        doc="Most embedding inputs this agent wants in one backend call (0: no limit).",
        minimum=0,
        section=Section.CAPACITY,
    )


@attrs.frozen(kw_only=True)
class DoclingAgentConfig(AgentConfig):
    """``nfrx docling``."""

    config_name: ClassVar[str] = "docling"

    server_url: str = setting(
        "ws://127.0.0.1:8080/api/docling/connect",
        env="SERVER_URL",
        doc="WebSocket URL of the server's tunnel endpoint (ws:// or wss://).",
        section=Section.TUNNEL,
    )
    doc_base_url: str = setting(
        "http://127.0.0.1:5001",
        env="DOC_BASE_URL",
        doc="Base URL of the docling-serve backend (its /v1/... routes and /health).",
    )
    doc_api_key: str = setting(
        "",
        env="DOC_API_KEY",
        doc="Key sent to docling-serve as X-Api-Key (never the client's key).",
        secret=True,
    )


@attrs.frozen(kw_only=True)
class AsrAgentConfig(AgentConfig):
    """``nfrx asr``."""

    config_name: ClassVar[str] = "asr"

    server_url: str = setting(
        "ws://127.0.0.1:8080/api/asr/connect",
        env="SERVER_URL",
        doc="WebSocket URL of the server's tunnel endpoint (ws:// or wss://).",
        section=Section.TUNNEL,
    )
    asr_base_url: str = setting(
        "http://127.0.0.1:5002/v1",
        env="ASR_BASE_URL",
        doc="Base URL of the OpenAI-compatible transcription backend (faster-whisper-server, "
        "speaches, ...).",
    )
    asr_api_key: str = setting(
        "",
        env="ASR_API_KEY",
        doc="Bearer key sent to the transcription backend (never the client's key).",
        secret=True,
    )
    asr_models: tuple[str, ...] = setting(
        (),
        env="ASR_MODELS",
        doc="Comma-separated model ids to announce instead of reading the backend's /models "
        "(for servers without that route, such as faster-whisper-server). Empty: read /models.",
    )


@attrs.frozen(kw_only=True)
class McpAgentConfig(AgentConfig):
    """``nfrx mcp``."""

    config_name: ClassVar[str] = "mcp"

    server_url: str = setting(
        "ws://127.0.0.1:8080/api/mcp/connect",
        env="SERVER_URL",
        doc="WebSocket URL of the server's tunnel endpoint (ws:// or wss://).",
        section=Section.TUNNEL,
    )
    max_concurrency: int = setting(
        1,
        env="MAX_CONCURRENCY",
        doc="Not used by nfrx mcp: MCP_MAX_INFLIGHT sets how many requests it serves at once.",
        minimum=1,
        section=Section.CAPACITY,
    )
    mcp_http_url: str = setting(
        "",
        env="MCP_HTTP_URL",
        doc="Streamable HTTP endpoint of the MCP provider (e.g. http://127.0.0.1:7777/mcp). "
        "Exactly one of this and MCP_STDIO_COMMAND.",
    )
    mcp_http_timeout: Seconds = setting(
        30.0,
        env="MCP_HTTP_TIMEOUT",
        doc="Seconds to connect to the HTTP provider and to answer a probe (calls themselves "
        "are bounded by the server's MCP_CALL_TIMEOUT and MCP_CALL_MAX).",
        positive=True,
    )
    mcp_http_insecure_skip_verify: bool = setting(
        False,
        env="MCP_HTTP_INSECURE_SKIP_VERIFY",
        doc="Do not verify the HTTP provider's TLS certificate (self-signed test setups only).",
    )
    mcp_stdio_command: str = setting(
        "",
        env="MCP_STDIO_COMMAND",
        doc="Command that runs the MCP provider over stdio (arguments after --, or "
        "MCP_STDIO_ARGS). Must be an absolute path unless MCP_STDIO_ALLOW_RELATIVE.",
    )
    mcp_stdio_args: tuple[str, ...] = setting(
        (),
        env="MCP_STDIO_ARGS",
        doc="Comma-separated arguments for MCP_STDIO_COMMAND (arguments after -- replace them).",
    )
    mcp_stdio_env: tuple[str, ...] = setting(
        (),
        env="MCP_STDIO_ENV",
        doc="Comma-separated environment for the stdio provider: KEY passes the agent's own "
        "value, KEY=value sets one. Nothing else is inherited but PATH, HOME, LANG and TMPDIR.",
    )
    mcp_stdio_workdir: str = setting(
        "",
        env="MCP_STDIO_WORKDIR",
        doc="Working directory of the stdio provider (default: the agent's).",
    )
    mcp_stdio_allow_relative: bool = setting(
        False,
        env="MCP_STDIO_ALLOW_RELATIVE",
        doc="Allow a relative MCP_STDIO_COMMAND, looked up on PATH.",
    )
    mcp_stdio_max_processes: int = setting(
        32,
        env="MCP_STDIO_MAX_PROCESSES",
        doc="Most stdio provider processes at once (one per legacy session, plus a warm "
        "spare); a new session past it answers 503.",
        positive=True,
    )
    mcp_session_idle: Seconds = setting(
        1800.0,
        env="MCP_SESSION_IDLE",
        doc="Seconds a stdio session may stay unused before its process is stopped.",
        positive=True,
    )
    mcp_max_inflight: int = setting(
        16,
        env="MCP_MAX_INFLIGHT",
        doc="JSON-RPC requests this relay serves at once (the server answers 429 past it).",
        positive=True,
    )
    auth_token: str = setting(
        "",
        env="AUTH_TOKEN",
        doc="Bearer token MCP clients may send instead of the server's API_KEY, so this relay's "
        "URL can be shared without the API key. Only its SHA-256 reaches the server.",
        secret=True,
    )
    mcp_auth_passthrough: bool = setting(
        False,
        env="MCP_AUTH_PASSTHROUGH",
        doc="Pass the client's Authorization header to the provider and let the provider do "
        "OAuth (the server then applies no key of its own to this relay; WWW-Authenticate and "
        "the protected-resource metadata are rewritten to the public URL).",
    )
