"""``nfrx serve``'s settings (:class:`ServerConfig`); how a setting is declared is in
:mod:`nfrx.config.setting`."""

from __future__ import annotations

import socket
import uuid
from typing import ClassVar

import attrs

from nfrx.config.checks import (
    QUEUE_EVENT_STYLES,
    ClassCheck,
    above_zero,
    one_of,
    origins,
    redis_address,
    tcp_port,
    tls_pair,
    workers_need_redis,
)
from nfrx.config.setting import MiB, Section, setting, shared
from nfrx.config.values import Seconds  # noqa: TC001 (the kinds read the annotations at runtime)


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
        # Checked against the known names by nfrx serve (nfrx.plugins.check_names): settings
        # import no plugin.
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


def default_instance_id() -> str:
    """Unique per server start: an instance that restarts is a new member of the gateway."""
    return f"{socket.gethostname() or 'nfrx'}-{uuid.uuid4().hex[:8]}"
