"""The ASGI application: quart-trio with the gateway's plugins' routes, JSON errors and per-request
cleanup.

The app mounts each of the gateway's plugins (:meth:`Plugin.blueprint
<nfrx.server.plugin.Plugin.blueprint>`), and for each plugin ``PLUGINS`` left out a blueprint
answering 404 ``plugin_disabled`` on its routes; the core's own routes (``/``, ``/healthz``, state,
metrics, API docs) describe those plugins only.

:func:`create_app` returns a plain ASGI callable wrapping the Quart app. The wrapper gives each
HTTP request a list of cleanup callbacks (``scope["nfrx.cleanups"]``) and runs them when the
request's ASGI call ends -- normally, by exception, or because quart-trio cancelled it when the
client disconnected. It covers the gap where the client leaves after a route returned a streaming
response but before Quart started iterating its body (a generator that never started never runs its
``finally``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response, has_request_context, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from nfrx._version import __version__
from nfrx.server import metrics, openapi, state, swagger_ui
from nfrx.server.accounting import accounted
from nfrx.server.cors import cors
from nfrx.server.gateway import error_style
from nfrx.server.guard import guarded
from nfrx.server.http_errors import HttpError
from nfrx.server.proxy import RelayBroken
from nfrx.server.request_body import BoundedConnection, BoundedRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from nfrx.server.gateway import Gateway

log = logging.getLogger("nfrx.server")


def error_response(error: HttpError) -> Response:
    response = Response(
        error.json_bytes(error_style()), status=error.status, content_type="application/json"
    )
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


DISCARD_LIMIT = 1024 * 1024
DISCARD_SECONDS = 1.0


async def _discard_body() -> bool:
    """Read and drop what is left of a refused request's body, so the keep-alive connection stays
    usable. False if it is too large or too slow to be worth it."""
    with trio.move_on_after(DISCARD_SECONDS):
        size = 0
        async for chunk in request.body:
            size += len(chunk)
            if size > DISCARD_LIMIT:
                return False
        return True
    return False


async def _answer(error: HttpError) -> Response:
    if not has_request_context():
        # A WebSocket upgrade refused before accept(): this HTTP response is its answer (there
        # is no request body to discard, and no error style but the default).
        return Response(error.json_bytes(), status=error.status, content_type="application/json")
    response = error_response(error)
    if error.status in (408, 413) or not await _discard_body():
        # An unread body would make the connection unusable for the client's next request
        # (hypercorn drops it at a moment the client cannot predict): say so explicitly.
        response.headers["Connection"] = "close"
    return response


def create_quart_app(gateway: Gateway) -> QuartTrio:
    app = QuartTrio("nfrx")
    # Uploads relayed chunk by chunk must slow the client down, not fill Quart's body buffer.
    app.request_class = BoundedRequest
    app.asgi_http_class = BoundedConnection
    # Streams (SSE generations, uploads) may legitimately last long: nfrx enforces its own
    # deadlines (REQUEST_TIMEOUT; BODY_TIMEOUT between body chunks, see request_body) with cancel
    # scopes, so Quart's blanket 60 s limits are off.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True

    @app.errorhandler(HttpError)
    async def handle_http_error(error: HttpError) -> Response:
        return await _answer(error)

    @app.errorhandler(HTTPException)
    async def handle_werkzeug(error: HTTPException) -> Response:
        if isinstance(error, WebsocketMismatch):
            # A WebSocket upgrade on a plain HTTP route (or the reverse).
            return await _answer(
                HttpError(
                    400,
                    "websocket_mismatch",
                    "this route does not take WebSocket connections"
                    if not has_request_context()
                    else "this route takes WebSocket connections only",
                )
            )
        status = error.code or 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        message = {
            404: "no such route",
            405: "method not allowed on this route",
        }.get(status, error.description or "error")
        return await _answer(HttpError(status, code, message))

    @app.get("/")
    async def index() -> Response:
        # People land on the dashboard; an API client (JSON, or */*) gets where things are.
        if request.accept_mimetypes.best_match([JSON, "text/html"]) == "text/html":
            response = Response(b"", status=302)
            response.headers["Location"] = DASHBOARD
        else:
            response = jsonify(index_document(gateway))
        response.headers["Vary"] = "Accept"
        return response

    @app.get("/healthz")
    async def healthz() -> Response:
        # Degraded (several instances, Redis unreachable) still serves: 200, and says so.
        registry = gateway.registry
        cluster = gateway.cluster
        status = "draining" if gateway.draining else "degraded" if cluster.degraded else "ok"
        body = {
            "status": status,
            "agents": {kind: registry.count(kind) for kind in gateway.agent_kinds},
            **cluster.health(),
        }
        response = jsonify(body)
        response.status_code = 503 if gateway.draining else 200
        return response

    for plugin in gateway.plugins:
        app.register_blueprint(plugin.blueprint())
    for name in gateway.disabled_plugins:
        app.register_blueprint(_disabled_plugin(name))
    app.register_blueprint(swagger_ui.blueprint(type(plugin).api() for plugin in gateway.plugins))
    if not gateway.config.metrics_port:  # else only the METRICS_PORT listener serves it
        metrics.register_route(app, gateway.metrics)
    app.register_blueprint(state.blueprint(gateway))
    return app


JSON = "application/json"
DASHBOARD = "/state"


def index_document(gateway: Gateway) -> dict[str, Any]:
    """``GET /`` for API clients: what this server is and where its routes start."""
    return {
        "name": "nfrx",
        "version": __version__,
        "dashboard": DASHBOARD,
        "docs": f"{openapi.PREFIX}/",
        "openapi": f"{openapi.PREFIX}/openapi.json",
        "health": "/healthz",
        "state": "/api/state",
        "apis": {p.name: p.api_root for p in gateway.plugins if p.api_root is not None},
    }


def _disabled_plugin(name: str) -> Blueprint:
    """404 JSON on every route (HTTP and WebSocket) of plugin ``name``, off by ``PLUGINS``."""
    bp = Blueprint(f"disabled_{name}", __name__, url_prefix=f"/api/{name}")
    error = HttpError(404, "plugin_disabled", f"the {name} plugin is not enabled on this server")

    async def refuse(rest: str = "") -> Response:
        raise error

    async def refuse_websocket(rest: str = "") -> Response:
        # Before accept(): the upgrade is answered with this HTTP response.
        return Response(error.json_bytes(), status=404, content_type="application/json")

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    bp.add_url_rule("/", "refuse_root", refuse, methods=methods)
    bp.add_url_rule("/<path:rest>", "refuse", refuse, methods=methods)
    bp.add_websocket("/<path:rest>", "refuse_websocket", refuse_websocket)
    return bp


def create_app(gateway: Gateway) -> Any:
    """The ASGI callable that hypercorn serves (see the module docstring), with a record per
    request (:mod:`nfrx.server.accounting`), behind CORS, behind the last-resort guard
    (:mod:`nfrx.server.guard`)."""
    app = create_quart_app(gateway)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cleanups: list[Callable[[], None]] = []
        scope["nfrx.cleanups"] = cleanups
        try:
            await app(scope, receive, send)
        except* RelayBroken as group:
            # The response had started, so the only honest signal left is an incomplete body:
            # ending the ASGI call without the final chunk makes hypercorn cut the connection.
            log.warning("response cut short: %s", "; ".join(map(str, group.exceptions)))
        finally:
            for cleanup in cleanups:
                cleanup()

    return guarded(cors(accounted(asgi, gateway), gateway.config.allowed_origins))
