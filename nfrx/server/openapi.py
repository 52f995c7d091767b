"""The server's own API description: an OpenAPI 3.1 document and Swagger UI, under ``/api/client/``.

The document is generated from tables, one :class:`Route` per public route (path, method,
summary, who may call it, what it answers): the core's own routes here (:data:`HEAD_ROUTES`,
:data:`TAIL_ROUTES`), and each plugin's in its :class:`ApiPart` (:meth:`Plugin.api
<nfrx.server.plugin.Plugin.api>`, from the plugin's ``openapi`` module), so that the document
names the routes of the plugins a server has, and only those. The schemas the rows refer to are in
:data:`SCHEMAS` and the parts. Nothing is written as JSON by hand, and
``tests/e2e/test_openapi.py`` checks that the tables and the app's URL map name the same routes.

The document is served with Swagger UI under ``/api/client/`` by :mod:`nfrx.server.swagger_ui`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import attrs

from nfrx._version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nfrx.server.http_errors import ErrorStyle

Auth = Literal[
    "none",
    "api_key",
    "api_key_or_x_api_key",
    "api_key_or_relay_token",
    "client_key",
    "api_key_or_client_key",
    "admin",
]

PREFIX = "/api/client"


@attrs.frozen
class Answer:
    """A successful answer: its status, what it means, and its body per media type."""

    status: int
    description: str
    content: tuple[tuple[str, dict[str, Any]], ...] = ()


@attrs.frozen
class Route:
    """One public route as the document describes it (``{name}`` for path parameters)."""

    method: Literal["get", "post", "patch", "delete"]
    path: str
    summary: str
    tag: str
    auth: Auth
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()
    error_style: ErrorStyle = "openai"
    body: bool = False
    description: str = ""
    body_content: tuple[tuple[str, dict[str, Any]], ...] = ()
    """The request body's media types when it is not the JSON :data:`SCHEMAS` RequestBody."""


@attrs.frozen
class ApiPart:
    """A plugin's part of the document: its routes, the schemas and path parameters they name,
    its tags, and what each error status means in its error style."""

    routes: tuple[Route, ...]
    schemas: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    parameters: dict[str, str] = attrs.field(factory=dict)
    """Path parameter -> its description."""
    tags: tuple[tuple[str, str], ...] = ()
    """(name, description) of the tags its routes use."""
    error_meanings: dict[ErrorStyle, dict[int, str]] = attrs.field(factory=dict)
    """Error style -> status -> what it means (the core's :data:`ERROR_MEANINGS` otherwise)."""


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


JSON = "application/json"
SSE = "text/event-stream"
HTML = "text/html"
MULTIPART = "multipart/form-data"


SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "description": "An OpenAI-style error (every route but /v1/messages).",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string", "description": "for people"},
                    "type": {"type": "string", "examples": ["invalid_request_error"]},
                    "code": {"type": "string", "examples": ["model_not_found"]},
                },
            }
        },
    },
    "AnthropicError": {
        "type": "object",
        "description": "An Anthropic-style error (/v1/messages).",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "examples": ["not_found_error"]},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "PlainError": {
        "type": "object",
        "description": "The original nfrx's error (jobs and transfer routes), with a message.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "examples": ["not_found"]},
            "message": {"type": "string", "description": "for people"},
        },
    },
    "JsonRpcError": {
        "type": "object",
        "description": "A JSON-RPC error produced by the relay itself: code -32603 (or -32700 / "
        "-32600 for a malformed body) and `data.nfrx.code` naming it (MCP_UNAUTHORIZED, "
        "MCP_FORBIDDEN, MCP_RELAY_NOT_FOUND, MCP_SESSION_NOT_FOUND, MCP_LIMIT_EXCEEDED, "
        "MCP_PROVIDER_UNAVAILABLE, MCP_DRAINING, MCP_INVALID_MESSAGE, MCP_TIMEOUT, ...).",
        "required": ["jsonrpc", "id", "error"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer", "null"]},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "integer"},
                    "message": {"type": "string"},
                    "data": {"type": "object"},
                },
            },
        },
    },
    "RequestBody": {
        "type": "object",
        "description": "Forwarded to the backend byte for byte; the gateway reads only `model` "
        "(to route) and rejects a body that is not a JSON object with one.",
        "required": ["model"],
        "properties": {"model": {"type": "string", "minLength": 1}},
        "additionalProperties": True,
    },
    "Relayed": {
        "type": "object",
        "description": "The backend's answer, passed through unchanged.",
        "additionalProperties": True,
    },
    "EventStream": {
        "type": "string",
        "description": "Server-sent events, relayed as they arrive. While the request waits in "
        "the queue: `: nfrx.queue {...}` comment lines (named `event: nfrx.queue` events with "
        "the request header `X-Nfrx-Queue-Events: events`); a failure after the start: a final "
        "`event: error`.",
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string", "description": "the serving agents' names, joined"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref("Model")},
        },
    },
    "Index": {
        "type": "object",
        "description": "Where this server's pages and APIs are (paths on this server).",
        "required": ["name", "version", "dashboard", "docs", "openapi", "health", "state", "apis"],
        "properties": {
            "name": {"const": "nfrx"},
            "version": {"type": "string"},
            "dashboard": {"type": "string", "examples": ["/state"]},
            "docs": {"type": "string", "examples": ["/api/client/"]},
            "openapi": {"type": "string", "examples": ["/api/client/openapi.json"]},
            "health": {"type": "string", "examples": ["/healthz"]},
            "state": {"type": "string", "examples": ["/api/state"]},
            "apis": {
                "type": "object",
                "description": "enabled plugin -> where its client API starts",
                "additionalProperties": {"type": "string"},
                "examples": [{"llm": "/api/llm/v1", "mcp": "/api/mcp/id/{id}"}],
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "agents"],
        "properties": {
            "status": {"enum": ["ok", "draining"]},
            "agents": {
                "type": "object",
                "description": "connected agents per kind",
                "additionalProperties": {"type": "integer"},
            },
        },
    },
    "State": {
        "type": "object",
        "description": "A snapshot of the server, its agents and queues.",
        "additionalProperties": True,
    },
}
"""The core's schemas: the error body of each error style, the relayed bodies every agent plugin
shares, the model catalogue's (:mod:`nfrx.server.catalog`), and the core routes'."""

ERROR_MEANINGS = {
    400: "The body is not a JSON object with a `model`.",
    401: "Missing or wrong key; a client key that is revoked, expired or disabled "
    "(`key_revoked`, `key_expired`, `key_disabled`).",
    403: "A client key that may not use this model or route (`model_not_allowed`, "
    "`route_not_allowed`); the admin API without API_KEY or ADMIN_HTTP_ROLES (`admin_disabled`).",
    404: "Unknown model, agent, route or client key.",
    409: "A client key's name is taken (`name_taken`), or the key is revoked (`key_revoked`).",
    429: "A client key's limit: `rate_limit_exceeded` (per minute) or `insufficient_quota` (its "
    "day's or month's tokens); see Retry-After.",
    413: "The body is larger than MAX_REQUEST_BYTES (MAX_UPLOAD_BYTES for docling and asr).",
    502: "The agent or its backend failed.",
    503: "Busy (`worker_busy`, `queue_timeout`) or draining, see Retry-After; the key store "
    "failed (`store_unavailable`, admin API).",
    504: "The request timed out (`timeout`, `idle_timeout`).",
}

PARAMETERS = {
    "agent_id": "The agent's CLIENT_ID: only this agent serves the request.",
    "model_id": "A model id; it may contain `:` and `/`.",
    "asset": "One of Swagger UI's static files.",
}
"""Path parameters of the core's routes and of the routes it makes for plugins (the model
catalogue's); a plugin's own are in its part."""

RELAY_ERRORS = (400, 401, 403, 404, 413, 429, 502, 503, 504)
RELAY_ANSWER = Answer(
    200,
    "The backend's answer (its own error statuses pass through unchanged too).",
    ((JSON, ref("Relayed")), (SSE, ref("EventStream"))),
)

ASSET_TYPES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "index.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
"""Swagger UI's files served as they ship (``swagger-initializer.js`` is ours:
:mod:`nfrx.server.swagger_ui`)."""

INITIALIZER = "swagger-initializer.js"


def model_routes(prefix: str, where: str, tag: str, listing: str, noun: str) -> list[Route]:
    """``GET <prefix>/models`` and ``/models/{model_id}`` (the LLM and ASR catalogues)."""
    return [
        Route(
            "get",
            f"{prefix}/models",
            listing + where,
            tag,
            "api_key",
            (Answer(200, "The models.", ((JSON, ref("ModelList")),)),),
            (401, 404, 503),
        ),
        Route(
            "get",
            f"{prefix}/models/{{model_id}}",
            f"Retrieve one {noun}{where}",
            tag,
            "api_key",
            (Answer(200, "The model.", ((JSON, ref("Model")),)),),
            (401, 404, 503),
        ),
    ]


def connect_route(kind: str, description: str = "") -> Route:
    """``GET /api/<kind>/connect``: the WebSocket ``nfrx <kind>`` agents dial."""
    return Route(
        "get",
        f"/api/{kind}/connect",
        f"The WebSocket that `nfrx {kind}` agents dial",
        "agents",
        "client_key",
        (Answer(101, "Switching Protocols: the tunnel is open."),),
        (401,),
        description=description
        or "A WebSocket upgrade authenticated with the client key (CLIENT_KEY). Not "
        "callable from this page.",
    )


HEAD_ROUTES: tuple[Route, ...] = (
    Route(
        "get",
        "/",
        "Where to start: the dashboard for browsers, an index for API clients",
        "server",
        "none",
        (
            Answer(
                200, "For API clients (Accept: application/json or */*).", ((JSON, ref("Index")),)
            ),
            Answer(302, "For browsers (Accept: text/html): to the dashboard, /state."),
        ),
    ),
    Route(
        "get",
        "/healthz",
        "Liveness and connected agents",
        "server",
        "none",
        (
            Answer(200, "Serving.", ((JSON, ref("Health")),)),
            Answer(503, "Draining: no new requests.", ((JSON, ref("Health")),)),
        ),
    ),
)
"""The core's routes listed before the plugins'."""

TAIL_ROUTES: tuple[Route, ...] = (
    Route(
        "get",
        "/api/state",
        "Snapshot of the server, agents and queues",
        "state",
        "api_key",
        (Answer(200, "The state.", ((JSON, ref("State")),)),),
        (401,),
    ),
    Route(
        "get",
        "/api/state/stream",
        "The state as server-sent events",
        "state",
        "api_key",
        (Answer(200, "One event per snapshot.", ((SSE, {"type": "string"}),)),),
        (401,),
    ),
    *(
        Route(
            "get",
            path,
            f"Dashboard: {what} (HTML; its scripts call /api/state with a key)",
            "state",
            "none",
            (Answer(200, "The page.", ((HTML, {"type": "string"}),)),),
        )
        for path, what in (
            ("/state", "charts, agents, models, relays, jobs"),
            ("/state/keys", "client keys (create, revoke)"),
            ("/state/connect", "connect an agent"),
        )
    ),
    Route(
        "get",
        "/metrics",
        "Prometheus metrics",
        "state",
        "none",
        (Answer(200, "Prometheus text format.", (("text/plain", {"type": "string"}),)),),
        description="On the main port unless METRICS_PORT names another one.",
    ),
    Route(
        "get",
        f"{PREFIX}/",
        "This API's documentation (Swagger UI)",
        "docs",
        "none",
        (Answer(200, "The page.", ((HTML, {"type": "string"}),)),),
    ),
    Route(
        "get",
        f"{PREFIX}/openapi.json",
        "This OpenAPI document",
        "docs",
        "none",
        (Answer(200, "The document.", ((JSON, {"type": "object"}),)),),
    ),
    Route(
        "get",
        f"{PREFIX}/{{asset}}",
        "Swagger UI's static files",
        "docs",
        "none",
        (Answer(200, "The file.", (("application/octet-stream", {"type": "string"}),)),),
        (404,),
    ),
)
"""The core's routes listed after the plugins'."""

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "none": [],
    "api_key": [{"apiKey": []}],
    "api_key_or_x_api_key": [{"apiKey": []}, {"xApiKey": []}],
    "api_key_or_relay_token": [{"apiKey": []}, {"relayToken": []}],
    "client_key": [{"clientKey": []}],
    "api_key_or_client_key": [{"apiKey": []}, {"clientKey": []}],
    "admin": [{"apiKey": []}],
}

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <API_KEY>` (not required when API_KEY is unset), "
        "or a client key (`nfrx-…`, /api/admin/keys) within its rules. The admin API takes only "
        "API_KEY (or an ADMIN_HTTP_ROLES role).",
    },
    "xApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "The API key as Anthropic clients send it (/v1/messages).",
    },
    "relayToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <AUTH_TOKEN>`: the token an MCP relay's agent "
        "was started with (MCP routes of that relay only).",
    },
    "clientKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <CLIENT_KEY>`: agents only.",
    },
}


_STYLE_NAMES: dict[ErrorStyle, tuple[str, str]] = {
    "openai": ("OpenAI", "Error"),
    "anthropic": ("Anthropic", "AnthropicError"),
    "jsonrpc": ("JsonRpc", "JsonRpcError"),
    "plain": ("Plain", "PlainError"),
}
"""Error style -> (prefix of the shared response names, body schema)."""


def _error_name(style: ErrorStyle, status: int) -> str:
    return f"{_STYLE_NAMES[style][0]}Error{status}"


CORE_TAGS = (
    ("server", "The server itself"),
    ("state", "State, dashboard and metrics"),
    ("agents", "Where agents connect"),
    ("docs", "This documentation"),
)
"""Tags of the core's routes (and of the plugins' connect routes), after the plugins' own."""


@attrs.frozen
class _Table:
    """Every part merged: what the operations are built from."""

    routes: tuple[Route, ...]
    schemas: dict[str, dict[str, Any]]
    parameters: dict[str, str]
    tags: tuple[tuple[str, str], ...]
    error_meanings: dict[ErrorStyle, dict[int, str]]

    @classmethod
    def of(cls, parts: Iterable[ApiPart]) -> _Table:
        routes, schemas, parameters = list(HEAD_ROUTES), dict(SCHEMAS), dict(PARAMETERS)
        tags: list[tuple[str, str]] = []
        meanings: dict[ErrorStyle, dict[int, str]] = {}
        for part in parts:
            routes += part.routes
            schemas.update(part.schemas)
            parameters.update(part.parameters)
            tags += [tag for tag in part.tags if tag not in tags]
            for style, meaning in part.error_meanings.items():
                meanings.setdefault(style, {}).update(meaning)
        routes += TAIL_ROUTES
        return cls(tuple(routes), schemas, parameters, (*tags, *CORE_TAGS), meanings)


def _operation(route: Route, table: _Table, error_responses: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for answer in route.answers:
        response: dict[str, Any] = {"description": answer.description}
        if answer.content:
            response["content"] = {media: {"schema": schema} for media, schema in answer.content}
        responses[str(answer.status)] = response
    for status in route.errors:
        name = _error_name(route.error_style, status)
        schema = _STYLE_NAMES[route.error_style][1]
        meanings = table.error_meanings.get(route.error_style, ERROR_MEANINGS)
        error_responses[name] = {
            "description": meanings.get(status, "Error."),
            "content": {JSON: {"schema": ref(schema)}},
        }
        responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "security": _SECURITY[route.auth],
        "responses": responses,
    }
    if route.description:
        operation["description"] = route.description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": table.parameters[name],
            "schema": {"type": "string"},
        }
        for name in re.findall(r"\{(\w+)\}", route.path)
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        content = route.body_content or ((JSON, ref("RequestBody")),)
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": schema} for media, schema in content},
        }
    return operation


def _operation_id(route: Route) -> str:
    words = re.findall(r"[A-Za-z0-9]+", route.path.replace("{", "by_"))
    if route.path.endswith("}/"):  # the trailing-slash twin of a parameterised route
        words.append("slash")
    return "_".join([route.method, *words]) if words else f"{route.method}_root"


def build_document(parts: Iterable[ApiPart]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the core's routes and ``parts`` (the plugins' parts, in the
    order of the plugins). Raises ValueError for a route listed twice."""
    table = _Table.of(parts)
    paths: dict[str, dict[str, Any]] = {}
    error_responses: dict[str, Any] = {}
    for route in table.routes:
        operations = paths.setdefault(route.path, {})
        if route.method in operations:
            raise ValueError(f"{route.method.upper()} {route.path} is listed twice")
        operations[route.method] = _operation(route, table, error_responses)
    asset = paths[f"{PREFIX}/{{asset}}"]["get"]["parameters"][0]
    asset["schema"] = {"type": "string", "enum": [*sorted(ASSET_TYPES), INITIALIZER]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nfrx",
            "version": __version__,
            "summary": "A gateway that relays OpenAI- and Anthropic-compatible requests to "
            "agents next to private AI services.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        # Relative to this document (/api/client/openapi.json), so the page keeps working when a
        # reverse proxy serves nfrx under a prefix.
        "servers": [{"url": "../..", "description": "this server"}],
        "paths": paths,
        "components": {
            "schemas": table.schemas,
            "responses": dict(sorted(error_responses.items())),
            "securitySchemes": SECURITY_SCHEMES,
        },
        "tags": [{"name": name, "description": text} for name, text in table.tags],
    }
