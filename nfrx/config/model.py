"""Settings of every nfrx process: values, defaults and units in one place.

Each field carries its environment variable name, help text, checks and command-line spelling as
metadata; the loader, the command-line options (generated from these fields) and the generated
documentation all read them from here, so a new setting is one field. Its type says how it is
read: durations are ``Seconds`` (float seconds; ``90s``, ``5m`` in every source), lists are
``tuple[str, ...]``, sizes are ``int`` bytes.
"""

from __future__ import annotations

import enum
import socket
import uuid
from typing import Any, ClassVar

import attrs

from nfrx.config.checks import (
    LOG_FORMATS,
    LOG_LEVELS,
    QUEUE_EVENT_STYLES,
    Check,
    ClassCheck,
    above_zero,
    at_least,
    ca_bundle,
    one_of,
    origins,
    plugin_names,
    redis_address,
    tcp_port,
    tls_pair,
    workers_need_redis,
)
from nfrx.config.values import Seconds  # noqa: TC001 (the kinds read the annotations at runtime)

MiB = 1024 * 1024


class Section(enum.IntEnum):
    """Where a setting stands among its command's options (``--help``, the manual page): how an
    agent reaches the server, what it serves, how much at once, how the process runs."""

    TUNNEL = 0
    SERVICE = 1
    CAPACITY = 2
    PROCESS = 3


def setting(
    default: Any,
    *,
    env: str,
    doc: str,
    secret: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    check: Check | None = None,
    flag: str = "",
    section: Section = Section.SERVICE,
    env_also: tuple[str, ...] = (),
) -> Any:
    """An attrs field documented with its environment variable.

    The field's type decides how its value is read (:mod:`nfrx.config.values`: ``Seconds`` for
    a duration, ``tuple[str, ...]`` for a comma-separated list); its YAML key is the snake_case
    of ``env``. ``minimum`` (inclusive), ``positive`` (strictly above zero) and ``check`` (see
    :mod:`nfrx.config.checks`) are checked when a config is loaded, with an error naming the
    variable. ``flag`` is the command-line spelling when it is not ``--<field-name>``
    (``"--reconnect, -r"``; a boolean pair as ``"--x / --no-x"``). The command's options are
    generated from these fields (:mod:`nfrx.cli.options`), ordered by ``section``.
    ``env_also``: other environment names read when ``env`` is unset (the original's spelling).
    """
    checks: list[Check] = []
    if minimum is not None:
        checks.append(at_least(minimum))
    if positive:
        checks.append(above_zero())
    if check is not None:
        checks.append(check)
    return attrs.field(
        default=default,
        metadata={
            "env": env,
            "help": doc,
            "secret": secret,
            "checks": tuple(checks),
            "flag": flag,
            "section": section,
            "env_also": env_also,
        },
    )


SHARED: dict[str, dict[str, Any]] = {
    "config_file": {
        "default": "",
        "env": "CONFIG_FILE",
        "doc": "YAML file with settings (keys: the snake_case of the environment names). "
        "Environment variables override it, flags override both. Default: the system file "
        "(/etc/nfrx/<command>.yaml on Linux) if it exists.",
        "flag": "--config",
    },
    "log_format": {
        "default": "text",
        "env": "LOG_FORMAT",
        "doc": "text (readable) or json (one JSON object per line).",
        "check": one_of(*LOG_FORMATS),
    },
    "log_level": {
        "default": "info",
        "env": "LOG_LEVEL",
        "doc": "debug, info, warning or error.",
        "check": one_of(*LOG_LEVELS),
    },
}
"""Settings every command has, declared once: :func:`shared` makes each class's field."""


def shared(name: str, section: Section = Section.PROCESS) -> Any:
    """A new field for the shared setting ``name`` (:data:`SHARED`)."""
    spec = dict(SHARED[name])
    return setting(spec.pop("default"), section=section, **spec)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """``nfrx serve``."""

    config_name: ClassVar[str] = "server"
    """Name of the default config file (``/etc/nfrx/server.yaml`` on Linux)."""
    checks: ClassVar[tuple[ClassCheck, ...]] = (tls_pair, workers_need_redis)
    """Checks that tie settings together (:mod:`nfrx.config.checks`)."""

    host: str = setting(
        "127.0.0.1",
        env="HOST",
        doc="Address to listen on. The default only accepts local connections (put a TLS "
        "reverse proxy in front, or set 0.0.0.0 to listen on every interface).",
    )
    port: int = setting(
        8080, env="PORT", doc="TCP port for the API and the agent tunnels.", check=tcp_port
    )
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
    request_timeout: Seconds = setting(
        600.0,
        env="REQUEST_TIMEOUT",
        doc="Seconds a proxied request may take in total, queueing included.",
        check=above_zero("seconds"),
    )
    max_request_bytes: int = setting(
        32 * MiB,
        env="MAX_REQUEST_BYTES",
        doc="Largest accepted request body, in bytes.",
        check=above_zero("bytes"),
    )
    max_upload_bytes: int = setting(
        1024 * MiB,
        env="MAX_UPLOAD_BYTES",
        doc="Largest accepted upload (docling and asr request bodies, which are streamed to "
        "the agent, never held in memory), in bytes.",
        minimum=0,
    )
    body_timeout: Seconds = setting(
        60.0,
        env="BODY_TIMEOUT",
        doc="Seconds a client may pause while sending a request body (no byte arrives) "
        "before the request is answered 408 and its connection closed.",
        check=above_zero("seconds"),
    )
    heartbeat_interval: Seconds = setting(
        5.0,
        env="HEARTBEAT_INTERVAL",
        doc="Seconds between tunnel pings (both directions).",
        check=above_zero("seconds"),
    )
    agent_dead_after: Seconds = setting(
        15.0,
        env="AGENT_DEAD_AFTER",
        doc="Seconds of silence after which an agent's tunnel is closed and its models removed.",
        check=above_zero("seconds"),
    )
    agent_max_models: int = setting(
        1000,
        env="AGENT_MAX_MODELS",
        doc="Most models one agent may announce. An agent that announces more is refused (its "
        "connection) or disconnected (a later status), with a reason it prints.",
        positive=True,
    )
    agent_max_model_name_bytes: int = setting(
        256,
        env="AGENT_MAX_MODEL_NAME_BYTES",
        doc="Longest model name an agent may announce, in UTF-8 bytes (refused like "
        "AGENT_MAX_MODELS).",
        positive=True,
    )
    drain_timeout: Seconds = setting(
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
    llm_queue_timeout: Seconds = setting(
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
        check=one_of(*QUEUE_EVENT_STYLES),
    )
    llm_queue_update_seconds: Seconds = setting(
        10.0,
        env="LLM_QUEUE_UPDATE_SECONDS",
        doc="Seconds between nfrx.queue updates while a streaming request waits (0: only the "
        "first one).",
        minimum=0,
    )
    llm_idle_timeout: Seconds = setting(
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
    mcp_call_timeout: Seconds = setting(
        30.0,
        env="MCP_CALL_TIMEOUT",
        doc="Seconds an MCP request may go without any activity from the provider (progress, "
        "messages on its stream, sampling/elicitation round trips) before it is cancelled "
        "and answered with a JSON-RPC error (MCP_TIMEOUT). GET streams, subscriptions/listen "
        "and initialize are exempt.",
        positive=True,
    )
    mcp_call_max: Seconds = setting(
        600.0,
        env="MCP_CALL_MAX",
        doc="Longest an MCP request may run in total, whatever its progress.",
        positive=True,
    )
    mcp_session_idle: Seconds = setting(
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
    mcp_allowed_hosts: tuple[str, ...] = setting(
        (),
        env="MCP_ALLOWED_HOSTS",
        doc="Comma-separated Host header values (host or host:port) MCP requests must carry, "
        "against DNS rebinding (e.g. 127.0.0.1,localhost for a local-only server). Empty: any "
        "host (a reverse proxy in front usually checks it).",
    )
    public_url: str = setting(
        "",
        env="PUBLIC_URL",
        doc="Public base URL of this server (https://host), used where nfrx must tell clients "
        "its own address (MCP OAuth metadata of pass-through relays). Empty: taken from each "
        "request's Host.",
    )
    # -- jobs and transfer APIs (/api/jobs, /api/transfer) -----------------------------------
    transfer_ttl: Seconds = setting(
        60.0,
        env="TRANSFER_TTL",
        doc="Seconds a transfer channel waits for both its reader and its writer to attach; "
        "a side still waiting then gets 410 transfer_expired.",
        positive=True,
    )
    jobs_client_ttl: Seconds = setting(
        30.0,
        env="JOBS_CLIENT_TTL",
        doc="Seconds a job that is not finished may go without its client (no event stream "
        "open, no poll, no cancel) before it is canceled with error client_inactive (0: never).",
        minimum=0,
    )
    jobs_sse_close_delay: Seconds = setting(
        5.0,
        env="JOBS_SSE_CLOSE_DELAY",
        doc="Seconds a job's event stream stays open after its final status event (0: closes "
        "at once; negative: stays open).",
    )
    jobs_lease_seconds: Seconds = setting(
        120.0,
        env="JOBS_LEASE_SECONDS",
        doc="Seconds a worker holds a claimed job without a sign of life; every status, "
        "payload, result or heartbeat post renews it. When it runs out, the job goes back to "
        "the queue (see JOBS_REQUEUE_EXPIRED).",
        positive=True,
    )
    jobs_requeue_expired: bool = setting(
        True,
        env="JOBS_REQUEUE_EXPIRED",
        doc="A job whose worker's lease ran out goes back to the queue (false: it fails with "
        "error lease_expired).",
        flag="--jobs-requeue-expired / --no-jobs-requeue-expired",
    )
    jobs_lease_required: bool = setting(
        True,
        env="JOBS_LEASE_REQUIRED",
        doc="Workers must send the claim's lease token (X-Nfrx-Lease header or lease_token "
        "field) to post to a job (false: a post without one is accepted, for workers written "
        "for the original nfrx; a wrong token is still refused).",
        flag="--jobs-lease-required / --no-jobs-lease-required",
    )
    jobs_retention: Seconds = setting(
        300.0,
        env="JOBS_RETENTION",
        doc="Seconds a finished job (completed, failed, canceled) stays readable before it is "
        "forgotten.",
        minimum=0,
    )
    jobs_max: int = setting(
        10_000,
        env="JOBS_MAX",
        doc="Jobs the server holds at most, finished ones included (the oldest finished ones "
        "are forgotten first); creating one more answers 503 too_many_jobs.",
        positive=True,
    )
    # -- client keys (/api/admin/keys) ---------------------------------------------------------
    state_dir: str = setting(
        "",
        env="STATE_DIR",
        doc="Directory for what the server keeps across restarts: the client keys and their "
        "usage (keys.db, created with the first key). Empty: $XDG_DATA_HOME/nfrx, else "
        "~/.local/share/nfrx.",
    )
    admin_http_roles: tuple[str, ...] = setting(
        (),
        env="ADMIN_HTTP_ROLES",
        doc="Comma-separated roles in X-User-Roles that grant the admin API (client keys, the "
        "agent setup page's client key) like API_KEY does; API_HTTP_ROLES does not grant it. "
        "Same trusted-proxy caveat.",
    )
    key_rate_window: Seconds = setting(
        60.0,
        env="KEY_RATE_WINDOW",
        doc="Seconds of the window in which a client key's requests_per_minute and "
        "tokens_per_minute limits are counted (60: per minute, as the names say; a shorter "
        "window applies the same numbers to it, for tests).",
        check=above_zero("seconds"),
    )
    # -----------------------------------------------------------------------------------------
    config_file: str = shared("config_file", Section.SERVICE)  # listed among the others, not last
    metrics_port: int = setting(
        0,
        env="METRICS_PORT",
        doc="Serve /metrics only on this port (same host). 0: on the main port.",
        minimum=0,
    )
    plugins: tuple[str, ...] = setting(
        ("all",),
        env="PLUGINS",
        doc="Comma-separated plugins to enable (llm, ...), 'all' or 'none'. Routes of the "
        "others answer 404.",
        check=plugin_names,
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        env="ALLOWED_ORIGINS",
        doc="Comma-separated browser origins allowed by CORS ('*' for any). Empty: no "
        "cross-origin access.",
        check=origins,
    )
    api_http_roles: tuple[str, ...] = setting(
        (),
        env="API_HTTP_ROLES",
        doc="Comma-separated roles in X-User-Roles that grant API access like the API key. "
        "Only behind a trusted proxy that sets (and strips client-sent) X-User-Roles.",
    )
    client_http_roles: tuple[str, ...] = setting(
        (),
        env="CLIENT_HTTP_ROLES",
        doc="Comma-separated roles in X-User-Roles that let an agent open a tunnel like the "
        "client key (same trusted-proxy caveat).",
    )
    tls_cert: str = setting(
        "",
        env="TLS_CERT",
        doc="PEM certificate (chain) file: serve https and wss in-process (needs TLS_KEY).",
    )
    tls_key: str = setting("", env="TLS_KEY", doc="PEM private key file for TLS_CERT.")
    # -- several instances (see README "Several instances") ----------------------------------
    redis_url: str = setting(
        "",
        env="REDIS_URL",
        env_also=("REDIS_ADDR",),
        doc="Redis shared by the instances of one gateway: redis://[:password@]host:port[/db], "
        "rediss:// (TLS), unix:///path/redis.sock, host:port, redis-sentinel://host:port[,host:"
        "port]/master[/db] (rediss-sentinel:// with TLS), redis-cluster://host:port[,host:port] "
        "(also REDIS_ADDR). Empty: this instance is the whole gateway. Its password is "
        "never logged.",
        check=redis_address,
        section=Section.PROCESS,
    )
    instance_id: str = setting(
        "",
        env="INSTANCE_ID",
        doc="This instance's id among the gateway's instances (default: the hostname and a "
        "random suffix, new each start).",
        section=Section.PROCESS,
    )
    advertise_url: str = setting(
        "",
        env="ADVERTISE_URL",
        doc="How agents reach this instance directly (ws://host:port, wss://, or http(s):// "
        "with a path prefix), when REDIS_URL is set: every agent keeps a tunnel to every "
        "instance. Default: from HOST and AGENT_PORT (else PORT); the hostname when HOST "
        "listens on every interface.",
        section=Section.PROCESS,
    )
    agent_port: int = setting(
        0,
        env="AGENT_PORT",
        doc="Also serve on this port (same host), and advertise it to agents as this instance's "
        "own (--workers: worker i listens on AGENT_PORT+i; 0 there: PORT+1+i). 0: no second port.",
        check=tcp_port,
        section=Section.PROCESS,
    )
    reuse_port: bool = setting(
        False,
        env="REUSE_PORT",
        doc="Let several processes of this host listen on PORT together (SO_REUSEPORT; the "
        "kernel spreads connections between them). --workers sets it for its workers.",
        flag="--reuse-port / --no-reuse-port",
        section=Section.PROCESS,
    )
    workers: int = setting(
        1,
        env="WORKERS",
        doc="Run this many instances on this host, sharing PORT, each with its own AGENT_PORT "
        "for the agents (needs REDIS_URL).",
        minimum=1,
        section=Section.PROCESS,
    )
    log_format: str = shared("log_format")
    log_level: str = shared("log_level")


def default_client_name() -> str:
    return socket.gethostname() or f"agent-{uuid.uuid4().hex[:8]}"


def default_instance_id() -> str:
    """Unique per server start: an instance that restarts is a new member of the gateway."""
    return f"{socket.gethostname() or 'nfrx'}-{uuid.uuid4().hex[:8]}"


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
