"""Who may call the jobs and transfer APIs, and the shape of their errors.

The original nfrx's rules: the client side of the jobs API takes the API key (or an
``API_HTTP_ROLES`` role), its worker side the client key (or a ``CLIENT_HTTP_ROLES`` role), and the
transfer API either. A side with neither a key nor roles configured is open. Errors on these routes
keep the original's flat body, ``{"error": "<code>"}``, with a ``message`` for people added (the
``plain`` error style, :func:`nfrx.server.gateway.use_error_style`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import request

from nfrx.server import auth
from nfrx.server.gateway import header
from nfrx.server.http_errors import HttpError

if TYPE_CHECKING:
    from nfrx.server.gateway import Gateway


def refuse_head() -> None:
    """405 for ``HEAD`` on a route whose ``GET`` takes something (a transfer's bytes, a claimed
    job): werkzeug answers ``HEAD`` with the ``GET`` handler, and the body it drops would be lost.
    """
    if request.method == "HEAD":
        raise HttpError(
            405, "method_not_allowed", "HEAD is not allowed here: its GET has side effects"
        )


def authorize(gateway: Gateway, *, api: bool, client: bool) -> None:
    """Raise 401 ``unauthorized`` unless the request holds the key (or a role) of one of the
    allowed sides: ``api`` (API_KEY, API_HTTP_ROLES, or a client key that may use ``jobs``, which
    may refuse with 401, 403 or 429) or ``client`` (CLIENT_KEY, CLIENT_HTTP_ROLES). A side with
    neither a key nor roles configured is open."""
    config = gateway.config
    token = auth.bearer_token(header("Authorization"))
    roles = header("X-User-Roles")
    sides = []
    if api:
        sides.append((config.api_key, config.api_http_roles))
    if client:
        sides.append((config.client_key, config.client_http_roles))
    if any(
        (key and auth.key_matches(token, key)) or auth.roles_match(roles, allowed)
        for key, allowed in sides
    ):
        return
    keys = gateway.client_keys
    if api and keys is not None and keys.admit(token, "jobs"):
        return
    if any(not key and not allowed for key, allowed in sides):
        return
    names = " or ".join(
        name for name, wanted in (("API_KEY", api), ("CLIENT_KEY", client)) if wanted
    )
    raise HttpError(
        401,
        "unauthorized",
        f"missing or invalid key: send 'Authorization: Bearer <{names}>'",
        headers={"WWW-Authenticate": 'Bearer realm="nfrx"'},
    )
