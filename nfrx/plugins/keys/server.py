"""The keys plugin, server side: the admin API under ``/api/admin``.

Routes (every one needs the admin: ``API_KEY``, or an ``ADMIN_HTTP_ROLES`` role in X-User-Roles;
with neither configured the admin API is off, 403 ``admin_disabled``):

* ``GET /api/admin/keys`` -- every key (revoked ones too), with its usage totals;
* ``POST /api/admin/keys`` -- create one: 201 with the key and its ``secret``, shown this once;
* ``GET|PATCH|DELETE /api/admin/keys/{key}`` -- show (usage by model, current windows), change,
  revoke; ``{key}`` is a key's id or its name;
* ``GET /api/admin/agent-setup`` -- what the dashboard's "Connect an agent" page needs to write
  commands: this server's public URL, its enabled agent plugins, and ``CLIENT_KEY``.

Errors are OpenAI-style JSON; every service error becomes its answer in one place,
:func:`_translated`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Final

from quart import Blueprint, Response, jsonify, request

from nfrx.plugins.keys.model import InvalidKey
from nfrx.plugins.keys.service import KeyNotFound, KeyRevoked, KeysService, NameTaken
from nfrx.plugins.keys.store import StoreError
from nfrx.server import auth
from nfrx.server.accounting import route_of
from nfrx.server.gateway import header
from nfrx.server.http_errors import HttpError, unauthorized

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nfrx.server.gateway import Gateway

log = logging.getLogger("nfrx.keys")

PREFIX: Final = "/api/admin"
MAX_BODY: Final = 64 * 1024


def require_admin(gateway: Gateway) -> None:
    """Raise unless the request holds ``API_KEY`` or an ``ADMIN_HTTP_ROLES`` role: 401, or 403
    ``admin_disabled`` when neither is configured (an open API has no admin)."""
    config = gateway.config
    if config.api_key and auth.key_matches(gateway.presented_key(), config.api_key):
        return
    roles = config.admin_http_roles
    if roles and auth.roles_match(header("X-User-Roles"), roles):
        return
    if not config.api_key and not roles:
        raise HttpError(
            403,
            "admin_disabled",
            "the admin API is off: set API_KEY (or ADMIN_HTTP_ROLES) on the server",
        )
    raise unauthorized()


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except KeyNotFound as exc:
        raise HttpError(404, "key_not_found", f"no client key has the id or name {exc}") from exc
    except NameTaken as exc:
        raise HttpError(
            409, "name_taken", f"a client key is named {exc} already (names are never reused)"
        ) from exc
    except KeyRevoked as exc:
        raise HttpError(409, "key_revoked", f"the key {exc} is revoked: it cannot change") from exc
    except InvalidKey as exc:
        raise HttpError(400, "invalid_request", str(exc), type="invalid_request_error") from exc
    except StoreError as exc:
        log.error("client keys: %s", exc)
        raise HttpError(
            503, "store_unavailable", "the key store failed; nothing was changed (see the log)"
        ) from exc


async def _body() -> dict[str, Any]:
    """The request's JSON object; 400 otherwise, 413 past :data:`MAX_BODY`."""
    too_large = HttpError(413, "request_too_large", f"the body exceeds {MAX_BODY} bytes")
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    data = bytearray()
    async for chunk in request.body:
        data += chunk
        if len(data) > MAX_BODY:
            raise too_large
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise HttpError(
            400, "invalid_json", "the body is not valid JSON", type="invalid_request_error"
        ) from exc
    if not isinstance(value, dict):
        raise HttpError(
            400, "invalid_body", "the body must be a JSON object", type="invalid_request_error"
        )
    return value


def _json(value: object, status: int = 200) -> Response:
    response = jsonify(value)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def public_url(gateway: Gateway) -> str:
    """``PUBLIC_URL``, else this request's scheme and Host."""
    return gateway.config.public_url.rstrip("/") or f"{request.scheme}://{request.host}"


def blueprint(gateway: Gateway, service: KeysService) -> Blueprint:
    bp = Blueprint("keys", __name__, url_prefix=PREFIX)

    @bp.before_request
    async def admit() -> None:
        require_admin(gateway)

    if gateway.config.redis_url:

        @bp.before_app_request
        async def prepare_key() -> None:
            # Several instances: a client key's shared state is fetched here, where a request may
            # wait; admission (gateway.admit and the like, no I/O) then reads it.
            if not gateway.draining:
                await service.prepare(gateway.presented_key(), route_of(request.path))

    @bp.get("/keys")
    async def list_keys() -> Response:
        await service.refresh()
        now = service.clock()
        return _json({"keys": [service.view(key, now) for key in service.all_keys()]})

    @bp.post("/keys")
    async def create() -> Response:
        body = await _body()
        with _translated():
            key, secret = await service.create(body)
        return _json({**service.view(key, service.clock(), detail=True), "secret": secret}, 201)

    @bp.get("/keys/<key>")
    async def show(key: str) -> Response:
        await service.refresh()
        with _translated():
            found = service.find(key)
        return _json(service.view(found, service.clock(), detail=True))

    @bp.patch("/keys/<key>")
    async def update(key: str) -> Response:
        body = await _body()
        with _translated():
            changed = await service.update(key, body)
        return _json(service.view(changed, service.clock(), detail=True))

    @bp.delete("/keys/<key>")
    async def revoke(key: str) -> Response:
        with _translated():
            revoked = await service.revoke(key)
        return _json(service.view(revoked, service.clock(), detail=True))

    @bp.get("/agent-setup")
    async def agent_setup() -> Response:
        config = gateway.config
        return _json(
            {
                "public_url": public_url(gateway),
                "plugins": [plugin.name for plugin in gateway.plugins if not plugin.always_on],
                "client_key": config.client_key,
                "client_roles": bool(config.client_http_roles),
            }
        )

    return bp
