"""``nfrx status``: a server's ``/api/state`` or a local agent's ``/status``, for people.

Fetching is plain synchronous httpx (one request per refresh); rendering is pure functions of the
JSON documents (:func:`render_server`, :func:`render_agent`), tested on their own.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

HELP = (
    "Show what a server or an agent is doing. By default it reads the local server's /api/state "
    "(http://127.0.0.1:8080, or the HOST, PORT, TLS_CERT and API_KEY that 'nfrx serve' would "
    "use, from the environment or its config file) and prints its agents, models and queue; "
    "--server URL reads another server's (with API_KEY); --agent URL reads a local agent's "
    "/status (its STATUS_ADDR), sending the agent's control token when its file is readable "
    "(without it the server and backend URLs and the last error are not shown). --json prints "
    "the raw JSON; --watch refreshes it every --interval seconds until Ctrl-C."
)

TIMEOUT = 10.0
DEFAULT_WATCH = 2.0


class StatusError(Exception):
    """Fetching failed; the message is the one line to print."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- fetching ----------------------------------------------------------------------------------


def state_url(server: str) -> str:
    """``/api/state`` of a server given by its base URL (a full ``.../api/state`` is kept)."""
    base = server.rstrip("/")
    return base if base.endswith("/api/state") else f"{base}/api/state"


def local_server(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The base URL and API key of the server ``nfrx serve`` would run here, from the same
    settings (defaults < config file < ``environ``). Raises ConfigError."""
    from nfrx.config.load import load
    from nfrx.config.model import ServerConfig

    config = load(ServerConfig, {}, environ)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.tls_cert else "http"
    return f"{scheme}://{host}:{config.port}", config.api_key


def agent_url(agent: str) -> str:
    """``/status`` of an agent given as ``http://host:port`` or just ``host:port``."""
    base = agent.rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return base if base.endswith("/status") else f"{base}/status"


def read_token(path: str) -> str:
    """The agent's control token from ``path`` (the agent's own default location when empty:
    next to ``CONFIG_FILE`` or in the user's config directory), or "" if it cannot be read."""
    import os
    from pathlib import Path

    from nfrx.agent.status import token_path

    file = Path(path) if path else token_path(os.environ.get("CONFIG_FILE", ""))
    try:
        return file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def fetch(url: str, api_key: str = "", token: str = "") -> dict[str, Any]:
    """GET ``url`` as JSON (with the API key for a server, the control token for an agent);
    raises :class:`StatusError` (code 2 for a refused key)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if token:
        headers["X-Auth-Token"] = token
    try:
        with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise StatusError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code in (401, 403):
        hint = "check --api-key / API_KEY" if api_key else "set --api-key or API_KEY"
        raise StatusError(f"{url} answered {response.status_code}: {hint}", 2)
    if response.status_code != 200:
        raise StatusError(f"{url} answered HTTP {response.status_code}: {_error_text(response)}")
    try:
        document: Any = response.json()
    except ValueError as exc:
        raise StatusError(f"{url} did not answer JSON") from exc
    if not isinstance(document, dict):
        raise StatusError(f"{url} did not answer a JSON object")
    return document


def _error_text(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(response.text[:200]).strip() or response.reason_phrase or "error"


# -- rendering ---------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    cells = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """``42s``, ``5m03s``, ``2h05m``, ``3d04h``."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _names(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def render_server(state: dict[str, Any]) -> str:
    """The readable form of an ``/api/state`` document."""
    server = state.get("server", {})
    head = (
        f"nfrx server {server.get('version', '?')} (sha {server.get('build_sha', '?')}), "
        f"up {duration(float(server.get('uptime_seconds', 0)))}"
    )
    if server.get("draining"):
        head += ", DRAINING"
    if server.get("instance"):
        head += f"; instance {server['instance']}"
        if server.get("degraded"):
            head += ", DEGRADED (Redis unreachable: serving alone)"
    parts = [head]
    instances = state.get("instances")
    if instances is not None:
        parts.append(f"\ninstances ({len(instances)})")
        parts.append(
            table(
                ["ID", "STATE", "URL", "VERSION"],
                [
                    [
                        f"{i.get('id', '?')}{' (this)' if i.get('this') else ''}",
                        i.get("state", "?"),
                        i.get("url", "?"),
                        i.get("version", "?"),
                    ]
                    for i in instances
                ],
            )
        )
    for kind, plugin in state.get("plugins", {}).items():
        if "agents" not in plugin:  # a plugin without agents (jobs, transfer)
            line = _render_agentless(kind, plugin)
            if line:
                parts.append(line)
            continue
        agents = plugin.get("agents", [])
        agent_rows = [
            [
                agent.get("name") or agent.get("id", "?"),
                agent.get("id", "?"),
                agent.get("status", "?"),
                _names(agent.get("models", [])),
                f"{agent.get('inflight', 0)}/{agent.get('max_concurrency', 0)}",
                agent.get("processed_total", 0),
                agent.get("failures_total", 0),
                agent.get("cancelled_total", 0),
                f"{agent.get('input_tokens_total', 0)}/{agent.get('output_tokens_total', 0)}",
            ]
            + ([_names(agent.get("instances", []))] if instances is not None else [])
            for agent in agents
        ]
        parts.append(f"\n{kind}: agents ({len(agents)})")
        if agent_rows:
            headers = [
                "NAME",
                "ID",
                "STATUS",
                "MODELS",
                "INFLIGHT",
                "PROCESSED",
                "FAILURES",
                "CANCELLED",
                "TOKENS IN/OUT",
            ]
            if instances is not None:
                headers.append("INSTANCES")
            parts.append(table(headers, agent_rows))
        else:
            parts.append("  (no agents connected)")
        relays = plugin.get("relays")
        if relays is not None:
            parts.append(_render_relays(kind, relays))
            continue  # relays are addressed by id: no models, no queue
        models = plugin.get("models", [])
        parts.append(f"\n{kind}: models ({len(models)})")
        if models:
            model_rows = [
                [
                    model.get("id", "?"),
                    _names(model.get("agents", [])),
                    f"{model.get('input_tokens_total', 0)}/{model.get('output_tokens_total', 0)}",
                ]
                for model in models
            ]
            parts.append(table(["MODEL", "AGENTS", "TOKENS IN/OUT"], model_rows))
        else:
            parts.append("  (no models)")
        queue = plugin.get("queue")
        if queue is not None:
            parts.append(
                f"\n{kind}: queue {queue.get('length', 0)}/{queue.get('capacity', 0)} waiting"
            )
    return "\n".join(parts)


def _render_agentless(kind: str, plugin: dict[str, Any]) -> str:
    """One line for the jobs and transfer sections (empty for an unknown section)."""
    if kind == "jobs":
        s = plugin.get("summary", {})
        return (
            f"\njobs: {s.get('queued_jobs', 0)} queued, {s.get('claimed_jobs', 0)} claimed, "
            f"{s.get('running_jobs', 0)} running, {s.get('awaiting_transfers', 0)} awaiting "
            f"transfers; {s.get('completed_jobs', 0)} completed, {s.get('failed_jobs', 0)} "
            f"failed, {s.get('canceled_jobs', 0)} canceled; {s.get('active_workers', 0)} "
            "active workers"
        )
    if kind == "transfer":
        return (
            f"\ntransfer: {plugin.get('waiting', 0)} waiting, {plugin.get('streaming', 0)} "
            f"streaming; {plugin.get('completed_total', 0)} completed, "
            f"{plugin.get('failed_total', 0)} failed"
        )
    return ""


def _render_relays(kind: str, relays: list[dict[str, Any]]) -> str:
    """The MCP relays of a state document: one row each, then their sessions (id prefixes)."""
    lines = [f"\n{kind}: relays ({len(relays)})"]
    if not relays:
        lines.append("  (no relays connected)")
        return "\n".join(lines)
    rows = [
        [
            relay.get("id", "?"),
            relay.get("status", "?"),
            relay.get("transport", "?"),
            relay.get("auth", "?"),
            relay.get("inflight", 0),
            relay.get("streams", 0),
            relay.get("sessions_count", 0),
        ]
        for relay in relays
    ]
    lines.append(
        table(["RELAY", "STATUS", "TRANSPORT", "AUTH", "INFLIGHT", "STREAMS", "SESSIONS"], rows)
    )
    sessions = [
        [
            relay.get("id", "?"),
            session.get("id_prefix", "?") + "…",
            session.get("inflight", 0),
            session.get("created_at", "?"),
            session.get("last_used", "?"),
        ]
        for relay in relays
        for session in relay.get("sessions", [])
    ]
    if sessions:
        lines.append(f"\n{kind}: sessions ({len(sessions)})")
        lines.append(table(["RELAY", "SESSION", "INFLIGHT", "CREATED", "LAST USED"], sessions))
    return "\n".join(lines)


AGENT_FIELDS = (
    ("state", "state"),
    ("client_name", "name"),
    ("client_id", "id"),
    ("version", "version"),
    ("server_url", "server"),
    ("connected_to_server", "connected to server"),
    ("backend_url", "backend"),
    ("connected_to_backend", "connected to backend"),
    ("models", "models"),
    ("current_jobs", "jobs"),
    ("last_error", "last error"),
)


HIDDEN = "(needs the control token)"
"""Shown for a field the agent leaves out of its reduced view (no token sent)."""

PRIVATE_FIELDS = ("server_url", "backend_url", "last_error")
"""The fields an agent shows only with its token (nfrx.agent.status.PRIVATE_FIELDS, not
imported: this command stays light)."""


def render_agent(status: dict[str, Any]) -> str:
    """The readable form of an agent's ``/status`` document."""
    rows = []
    for key, label in AGENT_FIELDS:
        value = status.get(key)
        if key in PRIVATE_FIELDS and key not in status:
            text = HIDDEN
        elif key == "current_jobs":
            text = f"{value}/{status.get('max_concurrency', '?')}"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list):
            text = _names(value)
        else:
            text = str(value) if value not in (None, "") else "-"
        rows.append(f"{label + ':':<22}{text}")
    return "\n".join(rows)


# -- the command -------------------------------------------------------------------------------


def command(
    server: Annotated[
        str | None,
        typer.Option(
            help="Base URL of an nfrx server (http://host:port); reads /api/state. [default: "
            "the local server, from HOST and PORT]"
        ),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="URL of an agent's status API (its STATUS_ADDR, http://127.0.0.1:4555)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="API_KEY", help="API key for the server. [env: API_KEY]", show_envvar=False
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            metavar="PATH",
            help="The agent's control token file for --agent [default: worker.token next to "
            "CONFIG_FILE, else in the user's config directory, like the agent].",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C (see --interval).")
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help=f"Seconds between refreshes with --watch (implies it). [default: "
            f"{DEFAULT_WATCH:g}]",
        ),
    ] = None,
) -> None:
    if server is not None and agent is not None:
        typer.echo("nfrx status: give one of --server URL or --agent URL, not both", err=True)
        raise typer.Exit(2)
    if interval is not None and not interval > 0:
        typer.echo("nfrx status: --interval needs a positive number of seconds", err=True)
        raise typer.Exit(2)
    url, key, token, render = _target(server, agent, api_key, token_file)
    try:
        if watch or interval is not None:
            _watch(url, key, token, render, as_json, interval or DEFAULT_WATCH)
        else:
            _show(url, key, token, render, as_json)
    except StatusError as exc:
        typer.echo(f"nfrx status: {exc}", err=True)
        raise typer.Exit(exc.code) from exc
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _target(
    server: str | None, agent: str | None, api_key: str | None, token_file: str | None
) -> tuple[str, str, str, Callable[[dict[str, Any]], str]]:
    """What to read and how to show it: URL, API key, control token, renderer (the local
    server's when neither ``server`` nor ``agent`` is given; a configuration error exits 2)."""
    if agent is not None:
        return agent_url(agent), "", read_token(token_file or ""), render_agent
    if server is not None:
        return state_url(server), api_key or "", "", render_server
    from nfrx.config.load import ConfigError

    try:
        local, local_key = local_server()
    except ConfigError as exc:
        typer.echo(f"nfrx status: configuration error: {exc} (or give --server URL)", err=True)
        raise typer.Exit(2) from exc
    return state_url(local), api_key or local_key, "", render_server


def _show(
    url: str, key: str, token: str, render: Callable[[dict[str, Any]], str], as_json: bool
) -> None:
    document = fetch(url, key, token)
    typer.echo(json.dumps(document, indent=2) if as_json else render(document))


def _watch(
    url: str,
    key: str,
    token: str,
    render: Callable[[dict[str, Any]], str],
    as_json: bool,
    every: float,
) -> None:
    """Refresh until Ctrl-C. A failed fetch is shown and retried (the server may be
    restarting); a refused key ends it. JSON is printed one document per line."""
    import sys
    import time

    clear = sys.stdout.isatty() and not as_json
    while True:
        try:
            document = fetch(url, key, token)
            text = json.dumps(document, separators=(",", ":")) if as_json else render(document)
        except StatusError as exc:
            if exc.code == 2:
                raise
            text = f"nfrx status: {exc}"
        if clear:
            typer.echo("\x1b[H\x1b[2J", nl=False)
        typer.echo(text)
        if not as_json:
            typer.echo(f"\n(every {every:g} s; Ctrl-C to stop)")
        time.sleep(every)
