"""``nfrx keys``: manage a server's client keys through its admin API (``/api/admin/keys``).

Each subcommand is one HTTP call (plain synchronous httpx) to the local server (the HOST, PORT,
TLS_CERT and API_KEY ``nfrx serve`` would use) or ``--server URL`` with ``--api-key``; what it
prints is a pure function of the JSON answer (:func:`render_keys`, :func:`render_key`), or the
JSON itself with ``--json``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nfrx.cli.status import TIMEOUT, local_server, table

if TYPE_CHECKING:
    from collections.abc import Sequence

HELP = (
    "Manage the client keys of a server: keys you give to people, teams or apps instead of "
    "API_KEY, each with its own allowed models and routes, limits (requests and tokens per "
    "minute, tokens per day and month), expiry, and usage. Talks to the local server (the HOST, "
    "PORT, TLS_CERT and API_KEY 'nfrx serve' would use) or to --server URL with --api-key "
    "(API_KEY)."
)

app = typer.Typer(
    name="keys",
    help=HELP,
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class KeysError(Exception):
    """A call failed; the message is the one line to print (exit status ``code``)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- options every subcommand takes ------------------------------------------------------------

Server = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Base URL of the nfrx server (http://host:port). [default: the local server, from "
        "HOST and PORT]",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="API_KEY",
        metavar="KEY",
        help="The server's API_KEY (the admin's key). [env: API_KEY]",
        show_envvar=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
KeyRef = Annotated[str, typer.Argument(metavar="KEY", help="The key's name or id.")]

Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        metavar="PATTERN",
        help="A model the key may use: a name or a shell pattern (llama3*); repeat it, or give "
        "several comma-separated. [default: every model]",
    ),
]
Routes = Annotated[
    list[str] | None,
    typer.Option(
        "--route",
        metavar="ROUTE",
        help="A route the key may use: llm, asr, docling, jobs, mcp (every MCP relay) or "
        "mcp:RELAY_ID (patterns allowed); repeat it, or comma-separate. [default: every route]",
    ),
]
Expires = Annotated[
    str | None,
    typer.Option(
        metavar="WHEN",
        help="When the key stops working: a duration from now (30d, 12h, 1w2d) or a date "
        "(2027-01-31, or RFC 3339 with a time zone); 'never' removes an expiry.",
    ),
]


RequestsPerMinute = Annotated[
    int | None,
    typer.Option(metavar="N", min=0, help="Most requests per minute (0: no limit)."),
]
TokensPerMinute = Annotated[
    int | None,
    typer.Option(metavar="N", min=0, help="Most tokens per minute (0: no limit)."),
]
TokensPerDay = Annotated[
    int | None,
    typer.Option(metavar="N", min=0, help="Most tokens per UTC day (0: no limit)."),
]
TokensPerMonth = Annotated[
    int | None,
    typer.Option(metavar="N", min=0, help="Most tokens per UTC calendar month (0: no limit)."),
]


# -- HTTP ----------------------------------------------------------------------------------------


def _base(server: str | None, api_key: str | None) -> tuple[str, str]:
    if server is not None:
        return server.rstrip("/"), api_key or ""
    from nfrx.config.load import ConfigError

    try:
        local, local_key = local_server()
    except ConfigError as exc:
        raise KeysError(f"configuration error: {exc} (or give --server URL)", 2) from exc
    return local, api_key or local_key


def call(
    method: str, server: str | None, api_key: str | None, path: str, body: object = None
) -> dict[str, Any]:
    """``method`` ``/api/admin{path}`` as JSON; raises :class:`KeysError` (code 2 when the key
    is refused)."""
    import httpx

    base, key = _base(server, api_key)
    url = f"{base}/api/admin{path}"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
            response = client.request(method, url, headers=headers, json=body)
    except httpx.HTTPError as exc:
        raise KeysError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    try:
        document: Any = response.json()
    except ValueError:
        document = None
    if response.status_code >= 400:
        message = _error_message(document) or response.text[:200].strip() or "error"
        hint = ""
        if response.status_code == 401:
            hint = " (check --api-key / API_KEY)" if key else " (set --api-key or API_KEY)"
        code = 2 if response.status_code in (401, 403) else 1
        raise KeysError(f"{url} answered {response.status_code}: {message}{hint}", code)
    if not isinstance(document, dict):
        raise KeysError(f"{url} did not answer a JSON object")
    return document


def _error_message(document: object) -> str:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return str(document["error"].get("message", ""))
    return ""


# -- values --------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def expiry_fields(text: str) -> dict[str, Any]:
    """The body fields for ``--expires``: ``expires_in`` seconds for a duration, ``expires_at``
    for a date; raises typer.BadParameter."""
    value = text.strip().lower()
    if value in ("never", "none"):
        return {"expires_at": None}
    if re.fullmatch(r"(\s*\d+(\.\d+)?\s*[wdhms])+\s*", value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(value))
        if seconds > 0:
            return {"expires_in": seconds}
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (30d, 12h) nor a date (2027-01-31)",
            param_hint="'--expires'",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return {"expires_at": moment.isoformat().replace("+00:00", "Z")}


def _patterns(values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def key_body(
    *,
    models: Sequence[str] | None,
    routes: Sequence[str] | None,
    limits: dict[str, int | None],
    expires: str | None,
) -> dict[str, Any]:
    """The JSON body for the options that were given (a limit of 0 is no limit)."""
    body: dict[str, Any] = {}
    if (patterns := _patterns(models)) is not None:
        body["models"] = patterns
    if (patterns := _patterns(routes)) is not None:
        body["routes"] = patterns
    given = {name: (value or None) for name, value in limits.items() if value is not None}
    if given:
        body["limits"] = given
    if expires is not None:
        body.update(expiry_fields(expires))
    return body


# -- rendering -----------------------------------------------------------------------------------


def _limits_text(limits: dict[str, Any]) -> str:
    short = {
        "requests_per_minute": "req/min",
        "tokens_per_minute": "tok/min",
        "tokens_per_day": "tok/day",
        "tokens_per_month": "tok/month",
    }
    parts = [f"{value} {short[name]}" for name, value in limits.items() if value]
    return ", ".join(parts) or "none"


def _when(value: object) -> str:
    return str(value) if value else "-"


def render_keys(document: dict[str, Any], *, everything: bool = False) -> str:
    """The readable form of ``GET /api/admin/keys`` (revoked keys only with ``everything``)."""
    keys = [k for k in document.get("keys", []) if everything or k.get("status") != "revoked"]
    if not keys:
        return "no client keys" + ("" if everything else " (--all shows revoked ones)")
    rows = []
    for key in keys:
        usage = key.get("usage", {})
        rows.append(
            [
                key.get("name", "?"),
                key.get("id", "?"),
                key.get("prefix", "?") + "…",
                key.get("status", "?"),
                ",".join(key.get("models", [])),
                ",".join(key.get("routes", [])),
                _limits_text(key.get("limits", {})),
                usage.get("requests", 0),
                f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}",
                _when(usage.get("last_used_at")),
            ]
        )
    headers = ["NAME", "ID", "PREFIX", "STATUS", "MODELS", "ROUTES", "LIMITS", "REQUESTS"]
    return table([*headers, "TOKENS IN/OUT", "LAST USED"], rows)


def render_key(key: dict[str, Any]) -> str:
    """The readable form of one key (``GET /api/admin/keys/{key}``)."""
    usage = key.get("usage", {})
    lines = [
        f"{'name:':<14}{key.get('name', '?')}",
        f"{'id:':<14}{key.get('id', '?')}",
        f"{'prefix:':<14}{key.get('prefix', '?')}…",
        f"{'status:':<14}{key.get('status', '?')}",
        f"{'models:':<14}{', '.join(key.get('models', []))}",
        f"{'routes:':<14}{', '.join(key.get('routes', []))}",
        f"{'limits:':<14}{_limits_text(key.get('limits', {}))}",
        f"{'expires:':<14}{_when(key.get('expires_at')) if key.get('expires_at') else 'never'}",
        f"{'created:':<14}{_when(key.get('created_at'))}",
        f"{'last used:':<14}{_when(usage.get('last_used_at'))}",
    ]
    if key.get("revoked_at"):
        lines.append(f"{'revoked:':<14}{key['revoked_at']}")
    lines.append(
        f"{'usage:':<14}{usage.get('requests', 0)} requests ({usage.get('errors', 0)} errors, "
        f"{usage.get('refused', 0)} refused, {usage.get('cancelled', 0)} cancelled), "
        f"tokens {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out"
    )
    windows = key.get("windows")
    if windows:
        lines.append(
            f"{'now:':<14}{windows.get('requests_this_minute', 0)} requests and "
            f"{windows.get('tokens_this_minute', 0)} tokens this minute, "
            f"{windows.get('tokens_today', 0)} tokens today, "
            f"{windows.get('tokens_this_month', 0)} this month"
        )
    models = key.get("usage_by_model", [])
    if models:
        rows = [
            [
                row.get("model", "?"),
                row.get("requests", 0),
                row.get("errors", 0),
                row.get("refused", 0),
                row.get("input_tokens", 0),
                row.get("output_tokens", 0),
                _when(row.get("last_used_at")),
            ]
            for row in models
        ]
        lines.append("")
        headers = ["MODEL", "REQUESTS", "ERRORS", "REFUSED", "TOKENS IN", "TOKENS OUT"]
        lines.append(table([*headers, "LAST USED"], rows))
    return "\n".join(lines)


def _print(document: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(document, indent=2) if as_json else text)


def _fail(exc: KeysError) -> typer.Exit:
    typer.echo(f"nfrx keys: {exc}", err=True)
    return typer.Exit(exc.code)


# -- the subcommands -----------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="A name for people and metrics (unique).")
    ],
    model: Models = None,
    route: Routes = None,
    requests_per_minute: RequestsPerMinute = None,
    tokens_per_minute: TokensPerMinute = None,
    tokens_per_day: TokensPerDay = None,
    tokens_per_month: TokensPerMonth = None,
    expires: Expires = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Create it disabled (enable it with update).")
    ] = False,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print its secret, which is shown this once."""
    limits = {
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "tokens_per_day": tokens_per_day,
        "tokens_per_month": tokens_per_month,
    }
    body = {"name": name, **key_body(models=model, routes=route, limits=limits, expires=expires)}
    if disabled:
        body["enabled"] = False
    try:
        key = call("POST", server, api_key, "/keys", body)
    except KeysError as exc:
        raise _fail(exc) from exc
    text = (
        f"Created client key {key.get('name')} ({key.get('id')}).\n"
        "Its secret, shown this once (store it now):\n\n"
        f"    {key.get('secret')}\n"
    )
    _print(key, as_json, text)


@app.command("list")
def list_keys(
    everything: Annotated[bool, typer.Option("--all", help="Also list revoked keys.")] = False,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """List the keys with their rules and usage."""
    try:
        document = call("GET", server, api_key, "/keys")
    except KeysError as exc:
        raise _fail(exc) from exc
    _print(document, as_json, render_keys(document, everything=everything))


@app.command("show")
def show(
    key: KeyRef, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show one key: its rules, its usage by model, and its counts in the current windows."""
    try:
        document = call("GET", server, api_key, f"/keys/{_quoted(key)}")
    except KeysError as exc:
        raise _fail(exc) from exc
    _print(document, as_json, render_key(document))


@app.command("update")
def update(
    key: KeyRef,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="A new name.")] = None,
    model: Models = None,
    route: Routes = None,
    requests_per_minute: RequestsPerMinute = None,
    tokens_per_minute: TokensPerMinute = None,
    tokens_per_day: TokensPerDay = None,
    tokens_per_month: TokensPerMonth = None,
    expires: Expires = None,
    enabled: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Let the key work, or stop it for now."),
    ] = None,
    server: Server = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Change a key: only what the options name (--model and --route replace the lists)."""
    limits = {
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "tokens_per_day": tokens_per_day,
        "tokens_per_month": tokens_per_month,
    }
    body = key_body(models=model, routes=route, limits=limits, expires=expires)
    if name is not None:
        body["name"] = name
    if enabled is not None:
        body["enabled"] = enabled
    if not body:
        typer.echo("nfrx keys update: nothing to change (see --help)", err=True)
        raise typer.Exit(2)
    try:
        document = call("PATCH", server, api_key, f"/keys/{_quoted(key)}", body)
    except KeysError as exc:
        raise _fail(exc) from exc
    _print(document, as_json, render_key(document))


@app.command("revoke")
def revoke(
    key: KeyRef, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Revoke a key for good: it is refused at once (its usage stays visible)."""
    try:
        document = call("DELETE", server, api_key, f"/keys/{_quoted(key)}")
    except KeysError as exc:
        raise _fail(exc) from exc
    _print(document, as_json, f"Revoked client key {document.get('name')} ({document.get('id')}).")


def _quoted(ref: str) -> str:
    from urllib.parse import quote

    return quote(ref, safe="")
