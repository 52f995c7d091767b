"""The agent's local status and control API (``STATUS_ADDR``), and the token that guards control.

Routes::

    GET  /status            what the agent is doing (JSON; more with X-Auth-Token, see below)
    GET  /version           {"version", "build_sha", "build_date"}
    POST /control/drain     take no new requests, keep running      (X-Auth-Token)
    POST /control/undrain   take requests again                      (X-Auth-Token)
    POST /control/shutdown  drain, then exit 0 like a first SIGTERM  (X-Auth-Token)

``GET /status`` without the token is the reduced view (:data:`PRIVATE_FIELDS` left out: the
server and backend URLs and the last error name private addresses); with it, the whole document,
its URLs redacted all the same (:mod:`nfrx.redact`: no userinfo, no query values). Every request
must name this API in its ``Host``: a loopback name or address, or STATUS_ADDR's host; any other
is answered 421, so that a web page whose DNS name was rebound to 127.0.0.1 cannot read it from
a browser. Control requests must come from a loopback address (403 otherwise, even when
STATUS_ADDR binds another interface) and carry the token (401 otherwise).

The token is created on first use, ``secrets.token_hex(32)``, in ``worker.token`` (mode 0600) next
to ``CONFIG_FILE`` or in the user's config directory, and reused after that; its path is logged,
never its value. ``nfrx status --agent`` sends it when it can read that file.

The app runs under hypercorn in the runtime's nursery (see :meth:`AgentRuntime.run`); handlers only
read the runtime or call its drain/undrain/shutdown methods, which never block.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from nfrx._version import __version__
from nfrx.redact import redact, redact_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from quart_trio import QuartTrio

    from nfrx.agent.runtime import AgentRuntime

log = logging.getLogger("nfrx.agent")

TOKEN_FILE = "worker.token"
TOKEN_HEADER = "X-Auth-Token"


# -- configuration -----------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port`` or ``[v6]:port``; raises ValueError naming STATUS_ADDR.

    The host is required: the API binds exactly the host given (``127.0.0.1`` for this machine
    only), never every interface by omission.
    """
    problem = f"STATUS_ADDR {text!r}: expected host:port, e.g. 127.0.0.1:4555"
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(problem)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{problem} (write IPv6 addresses as [::1]:4555)")
    port = int(port_text)
    if not 0 <= port <= 65535 or not host:
        raise ValueError(problem)
    return host, port


def user_config_dir() -> Path:
    """Where nfrx keeps per-user files: ``%APPDATA%\\nfrx`` on Windows, ``~/Library/Application
    Support/nfrx`` on macOS, else ``$XDG_CONFIG_HOME/nfrx`` (``~/.config/nfrx``)."""
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
    return base / "nfrx"


def token_path(config_file: str) -> Path:
    """``worker.token`` in ``CONFIG_FILE``'s directory when it is set, else in
    :func:`user_config_dir`."""
    directory = Path(config_file).resolve().parent if config_file else user_config_dir()
    return directory / TOKEN_FILE


def load_or_create_token(path: Path) -> str:
    """The token stored at ``path``, created (mode 0600, directory 0700) if missing or empty.

    A token file readable by others is tightened to 0600 with a warning. Raises OSError when the
    file can be neither read nor created.
    """
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text(encoding="ascii").strip()
        if token:
            if os.name == "posix" and path.stat().st_mode & 0o077:
                log.warning("%s was readable by other users; setting its mode to 0600", path)
                path.chmod(0o600)
            return token
        path.unlink()  # empty (an interrupted first run): start over
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    # O_EXCL: two agents starting at once cannot both write; the loser reads the winner's token.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_token(path)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(token + "\n")
    log.info("created the control token file %s", path)
    return token


# -- the app -----------------------------------------------------------------------------------


PRIVATE_FIELDS = ("server_url", "backend_url", "last_error")
"""``GET /status`` fields shown only to a caller with the token."""


def status_document(runtime: AgentRuntime, *, full: bool = True) -> dict[str, Any]:
    """The body of ``GET /status``: with ``full``, :data:`PRIVATE_FIELDS` too (redacted)."""
    document: dict[str, Any] = {
        "state": runtime.state_name,
        "server_url": redact_url(runtime.config.server_url),
        "backend_url": redact_url(runtime.backend_url),
        "connected_to_server": runtime.connected,
        "connected_to_backend": runtime.backend_ready,
        "models": list(runtime.state.models),
        "current_jobs": runtime.inflight,
        "max_concurrency": runtime.config.max_concurrency,
        "last_error": redact(runtime.last_error),
        "version": __version__,
        "client_id": runtime.agent_id,
        "client_name": runtime.name,
        "instances": [
            {"id": tunnel.instance_id, "connected": tunnel.live, "current_jobs": tunnel.inflight}
            for tunnel in runtime.instances.tunnels.values()
            if tunnel.instance_id
        ],
    }
    if not full:
        for name in PRIVATE_FIELDS:
            del document[name]
    return document


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str, status_host: str) -> bool:
    """True when a request's ``Host`` names this API: ``localhost`` (or a name under it), a
    loopback address, or ``status_host`` (STATUS_ADDR's host), any port."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if not host:
        return False
    return (
        host == "localhost"
        or host.endswith(".localhost")
        or _is_loopback(host)
        or host == status_host.lower().strip("[]")
    )


def create_status_app(runtime: AgentRuntime, token: str, status_host: str = "") -> QuartTrio:
    """The status/control app (see the module docstring); ``status_host`` is STATUS_ADDR's host,
    accepted in ``Host`` besides loopback names."""
    from quart import Response, jsonify, request
    from quart_trio import QuartTrio

    from nfrx._build import build_info

    app = QuartTrio("nfrx.agent.status")
    build = build_info()

    def error(status: int, code: str, message: str) -> tuple[Response, int]:
        return jsonify({"error": {"code": code, "message": message}}), status

    def has_token() -> bool:
        sent = request.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(sent.encode(), token.encode())

    @app.before_request
    async def check_host() -> tuple[Response, int] | None:
        if host_allowed(request.headers.get("Host", ""), status_host):
            return None
        return error(
            421,
            "misdirected_request",
            "this agent's status API answers only requests for a loopback host or its "
            "STATUS_ADDR host",
        )

    @app.get("/status")
    async def status() -> Response:
        return jsonify(status_document(runtime, full=has_token()))

    @app.get("/version")
    async def version() -> Response:
        return jsonify(
            {"version": build["version"], "build_sha": build["sha"], "build_date": build["date"]}
        )

    @app.post("/control/<action>")
    async def control(action: str) -> tuple[Response, int]:
        if not _is_loopback(request.remote_addr or ""):
            return error(403, "forbidden", "control requests are only accepted from loopback")
        if not has_token():
            return error(401, "unauthorized", f"missing or wrong {TOKEN_HEADER}")
        reason = f"/control/{action} request"
        if action == "drain":
            runtime.drain(reason)
        elif action == "undrain":
            if not runtime.undrain(reason):
                return error(409, "exiting", "the agent is shutting down; it cannot be undrained")
        elif action == "shutdown":
            runtime.shutdown(reason)
        else:
            return error(404, "not_found", f"unknown control action {action!r}")
        return jsonify(status_document(runtime)), 200

    return app


async def serve_local(
    app: Any,
    host: str,
    port: int,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown_trigger`` returns (then up to 1 s for
    responses in progress). ``task_status.started`` gets the bound URLs; a bind failure raises
    OSError (possibly inside exception groups)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    config.include_server_header = False
    await serve(
        app, config, shutdown_trigger=shutdown_trigger, mode="asgi", task_status=task_status
    )
