"""Settings of every nfrx process: values, defaults and units in one place.

Each field carries its environment variable name and help text as metadata; the CLI, the loader
and the generated documentation all read them from here. Durations are float seconds, sizes are
bytes.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any, ClassVar

import attrs

MiB = 1024 * 1024


def setting(
    default: Any,
    *,
    env: str,
    doc: str,
    secret: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    flag: str = "",
    listed: bool = False,
) -> Any:
    """An attrs field documented with its environment variable.

    ``minimum`` (inclusive) and ``positive`` (strictly above zero) are checked when a config is
    loaded, with an error naming the variable. ``flag`` is the command-line spelling when it is
    not ``--<field-name>`` (the generated reference shows it; a test checks it against the CLI).
    ``listed`` marks a comma-separated list, which a YAML file may also give as a list.
    """
    return attrs.field(
        default=default,
        metadata={
            "env": env,
            "help": doc,
            "secret": secret,
            "minimum": minimum,
            "positive": positive,
            "flag": flag,
            "listed": listed,
        },
    )


@attrs.frozen(kw_only=True)
class ServerConfig:
    """``nfrx serve``."""

    config_name: ClassVar[str] = "server"
    """Name of the default config file (``/etc/nfrx/server.yaml`` on Linux)."""

    host: str = setting(
        "127.0.0.1",
        env="HOST",
        doc="Address to listen on. The default only accepts local connections (put a TLS "
        "reverse proxy in front, or set 0.0.0.0 to listen on every interface).",
    )
    port: int = setting(8080, env="PORT", doc="TCP port for the API and the agent tunnels.")
    api_key: str = setting(
        "",
        env="API_KEY",
        doc="Bearer key clients must send to /api routes. Empty (and no API_HTTP_ROLES): "
        "the API is open.",
        secret=True,
    )
    client_key: str = setting(
        "",
        env="CLIENT_KEY",
        doc="Bearer key agents must send to open a tunnel. Empty (and no "
        "CLIENT_HTTP_ROLES): any agent may connect.",
        secret=True,
    )
    request_timeout: float = setting(
        600.0,
        env="REQUEST_TIMEOUT",
        doc="Seconds a proxied request may take in total, queueing included.",
    )
    max_request_bytes: int = setting(
        32 * MiB, env="MAX_REQUEST_BYTES", doc="Largest accepted request body, in bytes."
    )
    max_upload_bytes: int = setting(
        1024 * MiB,
        env="MAX_UPLOAD_BYTES",
        doc="Largest accepted upload (docling and asr request bodies, which are streamed to "
        "the agent, never held in memory), in bytes.",
        minimum=0,
    )
    body_timeout: float = setting(
        60.0,
        env="BODY_TIMEOUT",
        doc="Seconds a client may pause while sending a request body (no byte arrives) "
        "before the request is answered 408 and its connection closed.",
        positive=True,
    )
    heartbeat_interval: float = setting(
        5.0, env="HEARTBEAT_INTERVAL", doc="Seconds between tunnel pings (both directions)."
    )
    agent_dead_after: float = setting(
        15.0,
        env="AGENT_DEAD_AFTER",
        doc="Seconds of silence after which an agent's tunnel is closed and its models removed.",
    )
    drain_timeout: float = setting(
        300.0,
        env="DRAIN_TIMEOUT",
        doc="On SIGTERM/SIGINT, seconds to let in-flight requests finish before exiting.",
    )
    llm_min_score: float = setting(
        0.01,
        env="LLM_MIN_SCORE",
        doc="Lowest match score a model may have to be routed: 1 is exact, 0.5 another "
        "quantization of the same model and size (llama3:8b-q4_0 for llama3:8b). Set above 0.5 "
        "to turn alias matching off.",
    )
    llm_queue_size: int = setting(
        100,
        env="LLM_QUEUE_SIZE",
        doc="Requests that may wait for a busy model (0: no queue, busy answers 503 at once).",
        minimum=0,
    )
    llm_queue_timeout: float = setting(
        60.0,
        env="LLM_QUEUE_TIMEOUT",
        doc="Seconds a request may wait in the queue before it is answered 503 queue_timeout.",
        minimum=0,
    )
    llm_queue_events: bool = setting(
        True,
        env="LLM_QUEUE_EVENTS",
        doc="Streaming requests that wait get their response head at once and nfrx.queue "
        "updates with their position, in the form LLM_QUEUE_EVENT_STYLE says (false: the "
        "response head waits until an agent takes the request).",
        flag="--llm-queue-events / --no-llm-queue-events",
    )
    llm_queue_event_style: str = setting(
        "comments",
        env="LLM_QUEUE_EVENT_STYLE",
        doc="How a waiting stream's nfrx.queue updates are sent: comments (SSE comment lines, "
        "': nfrx.queue {...}', which every SSE client ignores: the openai and anthropic SDKs "
        "work unchanged) or events ('event: nfrx.queue' named events, as the original nfrx "
        "sends; some clients choke on them). A client may choose per request with the header "
        "X-Nfrx-Queue-Events: comments|events.",
    )
    llm_queue_update_seconds: float = setting(
        10.0,
        env="LLM_QUEUE_UPDATE_SECONDS",
        doc="Seconds between nfrx.queue updates while a streaming request waits (0: only the "
        "first one).",
        minimum=0,
    )
    llm_idle_timeout: float = setting(
        120.0,
        env="LLM_IDLE_TIMEOUT",
        doc="Seconds without a byte from the backend after which a request is abandoned "
        "(504, or a final SSE error event) and the backend request cancelled.",
        positive=True,
    )
    llm_max_retries: int = setting(
        2,
        env="LLM_MAX_RETRIES",
        doc="Times a request is retried on another agent when its agent fails before any "
        "byte of the answer was sent.",
        minimum=0,
    )
    llm_max_parallel_embeddings: int = setting(
        8,
        env="LLM_MAX_PARALLEL_EMBEDDINGS",
        doc="Most agents one embeddings request is split across.",
        minimum=1,
    )
    mcp_max_req_bytes: int = setting(
        10 * MiB,
        env="BROKER_MAX_REQ_BYTES",
        doc="Largest MCP message a client may POST to /api/mcp/id/..., in bytes (413 before "
        "it reaches the agent).",
        positive=True,
    )
    mcp_max_resp_bytes: int = setting(
        10 * MiB,
        env="BROKER_MAX_RESP_BYTES",
        doc="Largest single MCP message (a JSON body or one SSE event) a provider may answer, "
        "in bytes; a bigger one is replaced by a JSON-RPC error (MCP_LIMIT_EXCEEDED).",
        positive=True,
    )
    mcp_max_concurrency_per_client: int = setting(
        16,
        env="BROKER_MAX_CONCURRENCY_PER_CLIENT",
        doc="JSON-RPC requests one MCP relay may have in flight (notifications and replies "
        "to the provider's own requests never count); more answer 429 with Retry-After.",
        positive=True,
    )
    mcp_max_streams_per_client: int = setting(
        16,
        env="MCP_MAX_STREAMS_PER_CLIENT",
        doc="Long-lived MCP streams (GET streams, subscriptions/listen) one relay may have "
        "open; more answer 429.",
        positive=True,
    )
    mcp_call_timeout: float = setting(
        30.0,
        env="MCP_CALL_TIMEOUT",
        doc="Seconds an MCP request may go without any activity from the provider (progress, "
        "messages on its stream, sampling/elicitation round trips) before it is cancelled "
        "and answered with a JSON-RPC error (MCP_TIMEOUT). GET streams, subscriptions/listen "
        "and initialize are exempt.",
        positive=True,
    )
    mcp_call_max: float = setting(
        600.0,
        env="MCP_CALL_MAX",
        doc="Longest an MCP request may run in total, whatever its progress.",
        positive=True,
    )
    mcp_session_idle: float = setting(
        1800.0,
        env="MCP_SESSION_IDLE",
        doc="Seconds an MCP session may stay unused before the server forgets it and asks the "
        "agent to end it (DELETE); its client then gets 404 and re-initializes.",
        positive=True,
    )
    mcp_max_sessions_per_client: int = setting(
        1000,
        env="MCP_MAX_SESSIONS_PER_CLIENT",
        doc="MCP sessions one relay may hold; a new initialize past it answers 503.",
        positive=True,
    )
    mcp_allowed_hosts: str = setting(
        "",
        env="MCP_ALLOWED_HOSTS",
        doc="Comma-separated Host header values (host or host:port) MCP requests must carry, "
        "against DNS rebinding (e.g. 127.0.0.1,localhost for a local-only server). Empty: any "
        "host (a reverse proxy in front usually checks it).",
        listed=True,
    )
    public_url: str = setting(
        "",
        env="PUBLIC_URL",
        doc="Public base URL of this server (https://host), used where nfrx must tell clients "
        "its own address (MCP OAuth metadata of pass-through relays). Empty: taken from each "
        "request's Host.",
    )
    config_file: str = setting(
        "",
        env="CONFIG_FILE",
        doc="YAML file with settings (keys: the snake_case of the environment names). "
        "Environment variables override it, flags override both. Default: the system file "
        "(/etc/nfrx/<command>.yaml on Linux) if it exists.",
        flag="--config",
    )
    metrics_port: int = setting(
        0,
        env="METRICS_PORT",
        doc="Serve /metrics only on this port (same host). 0: on the main port.",
        minimum=0,
    )
    plugins: str = setting(
        "all",
        env="PLUGINS",
        doc="Comma-separated plugins to enable (llm, ...), 'all' or 'none'. Routes of the "
        "others answer 404.",
        listed=True,
    )
    allowed_origins: str = setting(
        "",
        env="ALLOWED_ORIGINS",
        doc="Comma-separated browser origins allowed by CORS ('*' for any). Empty: no "
        "cross-origin access.",
        listed=True,
    )
    api_http_roles: str = setting(
        "",
        env="API_HTTP_ROLES",
        doc="Comma-separated roles in X-User-Roles that grant API access like the API key. "
        "Only behind a trusted proxy that sets (and strips client-sent) X-User-Roles.",
        listed=True,
    )
    client_http_roles: str = setting(
        "",
        env="CLIENT_HTTP_ROLES",
        doc="Comma-separated roles in X-User-Roles that let an agent open a tunnel like the "
        "client key (same trusted-proxy caveat).",
        listed=True,
    )
    tls_cert: str = setting(
        "",
        env="TLS_CERT",
        doc="PEM certificate (chain) file: serve https and wss in-process (needs TLS_KEY).",
    )
    tls_key: str = setting("", env="TLS_KEY", doc="PEM private key file for TLS_CERT.")
    log_format: str = setting(
        "text", env="LOG_FORMAT", doc="text (readable) or json (one JSON object per line)."
    )
    log_level: str = setting("info", env="LOG_LEVEL", doc="debug, info, warning or error.")


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
    )
    client_key: str = setting(
        "", env="CLIENT_KEY", doc="Key sent to the server to open the tunnel.", secret=True
    )
    client_id: str = setting(
        "",
        env="CLIENT_ID",
        doc="Stable id of this agent (default: hostname plus a random suffix, new each start).",
    )
    client_name: str = setting(
        "", env="CLIENT_NAME", doc="Display name of this agent (default: the hostname)."
    )
    max_concurrency: int = setting(
        1, env="MAX_CONCURRENCY", doc="Requests this agent runs at once."
    )
    reconnect: bool = setting(
        False,
        env="RECONNECT",
        doc="Keep retrying when the server is unreachable or the tunnel drops "
        "(1 s x3, 5 s x3, 15 s x3, then every 30 s).",
        flag="--reconnect, -r",
    )
    request_timeout: float = setting(
        600.0,
        env="REQUEST_TIMEOUT",
        doc="Longest a single backend request may run, in seconds.",
    )
    drain_timeout: float = setting(
        60.0,
        env="DRAIN_TIMEOUT",
        doc="On SIGTERM/SIGINT, seconds to let in-flight requests finish (0: exit at once, "
        "-1: wait as long as they take).",
    )
    config_file: str = setting(
        "",
        env="CONFIG_FILE",
        doc="YAML file with settings (keys: the snake_case of the environment names). "
        "Environment variables override it, flags override both. Default: the system file "
        "(/etc/nfrx/<command>.yaml on Linux) if it exists.",
        flag="--config",
    )
    status_addr: str = setting(
        "",
        env="STATUS_ADDR",
        doc="host:port for the local status and control API (GET /status, POST /control/...). "
        "Empty: off.",
    )
    metrics_port: int = setting(
        0, env="METRICS_PORT", doc="Port for this agent's /metrics (127.0.0.1). 0: off.", minimum=0
    )
    ca_file: str = setting(
        "",
        env="CA_FILE",
        doc="PEM CA bundle to verify a wss:// server with (default: the system's CAs).",
    )
    log_format: str = setting(
        "text", env="LOG_FORMAT", doc="text (readable) or json (one JSON object per line)."
    )
    log_dir: str = setting(
        "",
        env="LOG_DIR",
        doc="Also write logs to a rotating file in this directory (created if missing; "
        "nfrx-<command>.log, e.g. nfrx-llm.log; 10 MiB x 5 files).",
    )
    log_level: str = setting("info", env="LOG_LEVEL", doc="debug, info, warning or error.")


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
    model_poll_interval: float = setting(
        60.0,
        env="MODEL_POLL_INTERVAL",
        doc="Seconds between re-reads of the backend's models; changes (an empty list "
        "included) reach the server at once. While the backend does not answer, it is "
        "probed every 2 s at most.",
        positive=True,
    )
    embedding_batch_size: int = setting(
        0,
        env="EMBEDDING_BATCH_SIZE",
        doc="Most embedding inputs this agent wants in one backend call (0: no limit).",
        minimum=0,
    )


@attrs.frozen(kw_only=True)
class DoclingAgentConfig(AgentConfig):
    """``nfrx docling``."""

    config_name: ClassVar[str] = "docling"

    server_url: str = setting(
        "ws://127.0.0.1:8080/api/docling/connect",
        env="SERVER_URL",
        doc="WebSocket URL of the server's tunnel endpoint (ws:// or wss://).",
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
    asr_models: str = setting(
        "",
        env="ASR_MODELS",
        doc="Comma-separated model ids to announce instead of reading the backend's /models "
        "(for servers without that route, such as faster-whisper-server). Empty: read /models.",
        listed=True,
    )


def env_name(cls: type[Any], field: str) -> str:
    env: str = attrs.fields_dict(cls)[field].metadata["env"]
    return env


@attrs.frozen(kw_only=True)
class McpAgentConfig(AgentConfig):
    """``nfrx mcp``."""

    config_name: ClassVar[str] = "mcp"

    server_url: str = setting(
        "ws://127.0.0.1:8080/api/mcp/connect",
        env="SERVER_URL",
        doc="WebSocket URL of the server's tunnel endpoint (ws:// or wss://).",
    )
    max_concurrency: int = setting(
        1,
        env="MAX_CONCURRENCY",
        doc="Not used by nfrx mcp: MCP_MAX_INFLIGHT sets how many requests it serves at once.",
    )
    mcp_http_url: str = setting(
        "",
        env="MCP_HTTP_URL",
        doc="Streamable HTTP endpoint of the MCP provider (e.g. http://127.0.0.1:7777/mcp). "
        "Exactly one of this and MCP_STDIO_COMMAND.",
    )
    mcp_http_timeout: float = setting(
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
    mcp_stdio_args: str = setting(
        "",
        env="MCP_STDIO_ARGS",
        doc="Comma-separated arguments for MCP_STDIO_COMMAND (arguments after -- replace them).",
        listed=True,
    )
    mcp_stdio_env: str = setting(
        "",
        env="MCP_STDIO_ENV",
        doc="Comma-separated environment for the stdio provider: KEY passes the agent's own "
        "value, KEY=value sets one. Nothing else is inherited but PATH, HOME, LANG and TMPDIR.",
        listed=True,
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
    mcp_session_idle: float = setting(
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
