"""``/api/client/``: the OpenAPI document names exactly the app's routes, and Swagger UI is served
from local files only."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import httpx
import pytest
import trio
from openapi_spec_validator import validate
from playwright.sync_api import expect, sync_playwright

from nfrx.config.model import ServerConfig
from nfrx.server.app import create_quart_app
from nfrx.server.runner import compose
from tests.e2e.harness import Server

IGNORED_RULES = {
    # Quart registers it for every app; nfrx has no static folder, so it only ever answers 404.
    ("get", "/static/{filename}"): "Quart's default static route",
}
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # added by werkzeug/Quart to every route
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def app_routes() -> set[tuple[str, str]]:
    """(method, OpenAPI path) for every rule of the app as ``nfrx serve`` builds it."""
    app = create_quart_app(compose(ServerConfig()))
    routes = set()
    for rule in app.url_map.iter_rules():
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in IGNORED_METHODS:
                routes.add((method.lower(), path))
    return routes - set(IGNORED_RULES)


def document_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


async def fetch_document(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        # No Authorization header: the server runs with API_KEY set, the document needs none.
        response = await client.get("/api/client/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def test_ignored_rules_exist() -> None:
    """An ignore entry whose rule is gone would hide nothing and should be dropped."""
    app = create_quart_app(compose(ServerConfig()))
    rules = {_CONVERTER.sub(r"{\1}", rule.rule) for rule in app.url_map.iter_rules()}
    assert {path for _, path in IGNORED_RULES} <= rules


@pytest.mark.e2e
async def test_document_and_app_agree_both_ways(server: Server) -> None:
    document = await fetch_document(server)
    in_app = app_routes()
    in_document = document_routes(document)
    undocumented = sorted(in_app - in_document)
    not_served = sorted(in_document - in_app)
    assert not undocumented, f"routes the app serves but the document omits: {undocumented}"
    assert not not_served, f"routes the document lists but the app lacks: {not_served}"


@pytest.mark.e2e
async def test_document_is_valid_openapi_3_1(server: Server) -> None:
    document = await fetch_document(server)
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises with the offending JSON pointer

    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "http", "scheme": "bearer"}
    assert schemes["xApiKey"] == {
        **schemes["xApiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
    }
    paths = document["paths"]
    responses = document["components"]["responses"]

    def error_schema(operation: dict[str, Any], status: str) -> str:
        reference: str = operation["responses"][status]["$ref"]
        response = responses[reference.rsplit("/", 1)[1]]
        schema_ref: str = response["content"]["application/json"]["schema"]["$ref"]
        return schema_ref.rsplit("/", 1)[1]

    chat = paths["/api/llm/v1/chat/completions"]["post"]
    assert chat["security"] == [{"apiKey": []}]
    assert error_schema(chat, "401") == "Error"
    body_ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert body["required"] == ["model"]
    assert body["properties"]["model"]["type"] == "string"
    assert body["additionalProperties"] is True

    for prefix in ("/api/llm/v1", "/api/llm/id/{agent_id}/v1"):
        messages = paths[f"{prefix}/messages"]["post"]
        assert messages["security"] == [{"apiKey": []}, {"xApiKey": []}]
        assert error_schema(messages, "404") == "AnthropicError"

    connect = paths["/api/llm/connect"]["get"]
    assert set(connect["responses"]) == {"101", "401"}
    for public in ("/healthz", "/api/client/", "/api/client/openapi.json", "/metrics", "/state"):
        assert paths[public]["get"]["security"] == [], public


@pytest.mark.e2e
async def test_swagger_ui_is_served_from_local_files(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        page = await client.get("/api/client/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        references = re.findall(r'(?:src|href)="([^"]*)"', page.text)
        assert "./swagger-ui-bundle.js" in references
        assert all(ref.startswith("./") for ref in references), references

        for reference in references:
            asset = await client.get(f"/api/client/{reference.removeprefix('./')}")
            assert asset.status_code == 200, reference
            assert asset.content, reference
        bundle = await client.get("/api/client/swagger-ui-bundle.js")
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert b"SwaggerUIBundle" in bundle.content

        initializer = (await client.get("/api/client/swagger-initializer.js")).text
        assert 'new URL("./openapi.json", window.location.href)' in initializer
        assert "validatorUrl: null" in initializer  # no call to validator.swagger.io
        assert "http" not in initializer

        missing = await client.get("/api/client/no-such-file.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="the Swagger UI test needs a Chromium on PATH (Debian: apt-get install chromium)",
)
async def test_swagger_ui_offers_this_server_by_its_url(server: Server) -> None:
    """The document's server is relative ("../.."); the page shows the URL it resolves to."""
    assert CHROMIUM is not None
    document = await fetch_document(server)
    assert document["servers"] == [{"url": "../..", "description": "this server"}]

    def browse() -> tuple[list[str], list[str]]:
        errors: list[str] = []
        with sync_playwright() as p:
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                page = browser.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"{server.url}/api/client/")
                options = page.locator(".servers select option")
                expect(options.first).to_be_attached(timeout=20_000)
                return options.all_text_contents(), errors
            finally:
                browser.close()

    options, errors = await trio.to_thread.run_sync(browse)
    assert errors == []
    assert options == [f"{server.url} - this server"]
