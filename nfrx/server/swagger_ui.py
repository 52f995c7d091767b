"""``/api/client/``: the OpenAPI document (:mod:`nfrx.server.openapi`) and Swagger UI to read it.

Swagger UI's static files come from the ``swagger-ui-py`` package (Swagger UI 5, which renders
OpenAPI 3.1; Apache-2.0) and are served from here, so the page works offline: no CDN. Its
package is only located on disk, never imported. The page, the document and the assets need no
key: they describe the API, they do not call it (the page's "Try it out" sends the key the user
types in).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from quart import Blueprint, Response

from nfrx.server.http_errors import HttpError
from nfrx.server.openapi import ASSET_TYPES, INITIALIZER, JSON, PREFIX, build_document

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nfrx.server.openapi import ApiPart

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nfrx API</title>
<link rel="stylesheet" href="./swagger-ui.css">
<link rel="stylesheet" href="./index.css">
<link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="./favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="./swagger-ui-bundle.js"></script>
<script src="./swagger-initializer.js"></script>
</body>
</html>
"""

# The document names its server relative to itself ("../..", so that a reverse proxy may serve
# nfrx under a prefix), and Swagger UI would show that text in its server list: the page loads
# the document itself and shows the URL it resolves to (http://host:port, or with the prefix).
# validatorUrl: null -- Swagger UI would otherwise send the document to validator.swagger.io.
INITIALIZER_JS = """window.onload = async function () {
  const url = new URL("./openapi.json", window.location.href);
  const spec = await (await fetch(url)).json();
  spec.servers = (spec.servers || []).map((server) => (
    {...server, url: new URL(server.url, url).href.replace(/[/]$/, "")}));
  window.ui = SwaggerUIBundle({
    spec: spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout"
  });
};
"""


def swagger_ui_dir() -> Path | None:
    """Where ``swagger-ui-py`` keeps Swagger UI's files (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def blueprint(parts: Iterable[ApiPart]) -> Blueprint:
    """``GET /api/client/`` (Swagger UI), ``/api/client/openapi.json`` (the document of the core
    and ``parts``) and the UI's files."""
    bp = Blueprint("client", __name__, url_prefix=PREFIX)
    document = json.dumps(build_document(parts), indent=1).encode()
    cache: dict[str, bytes] = {}

    @bp.get("/")
    async def page() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @bp.get("/openapi.json")
    async def openapi() -> Response:
        return Response(document, content_type=JSON)

    @bp.get("/<asset>")
    async def asset(asset: str) -> Response:
        if asset == INITIALIZER:
            return Response(INITIALIZER_JS, content_type=ASSET_TYPES["swagger-ui-bundle.js"])
        content_type = ASSET_TYPES.get(asset)
        if content_type is None:
            raise HttpError(404, "not_found", "no such route")
        data = cache.get(asset)
        if data is None:
            folder = swagger_ui_dir()
            if folder is None:
                raise HttpError(
                    500, "docs_unavailable", "swagger-ui-py is not installed on the server"
                )
            data = cache[asset] = await trio.Path(folder / asset).read_bytes()
        response = Response(data, content_type=content_type)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    return bp
