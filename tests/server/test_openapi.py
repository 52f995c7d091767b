"""The OpenAPI table's own consistency (the e2e test compares it with the app's routes)."""

from __future__ import annotations

import re

import pytest

from nfrx.plugins import SERVER_PLUGINS, SERVICE_PLUGINS, plugin_class
from nfrx.server import openapi

PARTS = [plugin_class(name).api() for name in (*SERVER_PLUGINS, *SERVICE_PLUGINS)]
"""Every plugin's part: the document of a server with ``PLUGINS=all``."""


def test_operation_ids_are_unique_and_path_parameters_declared() -> None:
    document = openapi.build_document(PARTS)
    ids = []
    for path, item in document["paths"].items():
        for operation in item.values():
            ids.append(operation["operationId"])
            declared = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), path
    assert len(ids) == len(set(ids))


def test_error_responses_follow_the_route_style() -> None:
    document = openapi.build_document(PARTS)
    for path, item in document["paths"].items():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if "$ref" not in response:
                    continue
                name = response["$ref"].rsplit("/", 1)[1]
                if path.endswith("/messages"):
                    expected = "AnthropicError"
                elif "/api/mcp/id/" in path:
                    expected = "JsonRpcError"
                elif path.startswith(("/api/jobs", "/api/transfer")):
                    expected = "PlainError"  # the original nfrx's {"error": "<code>"}
                else:
                    expected = "OpenAIError"
                assert name == f"{expected}{status}", (path, status)
                assert name in document["components"]["responses"]


def test_security_names_defined_schemes() -> None:
    document = openapi.build_document(PARTS)
    schemes = document["components"]["securitySchemes"]
    for item in document["paths"].values():
        for operation in item.values():
            for requirement in operation["security"]:
                assert set(requirement) <= set(schemes)


def test_a_route_listed_twice_is_refused() -> None:
    twice = openapi.ApiPart((openapi.HEAD_ROUTES[0],))
    with pytest.raises(ValueError, match="listed twice"):
        openapi.build_document([*PARTS, twice])


def test_the_document_names_only_the_plugins_given() -> None:
    """A server with ``PLUGINS=llm`` documents the LLM routes, the always-on jobs, transfer and
    admin (client keys) APIs and its own; nothing of MCP, Docling or ASR (their routes answer
    404 there)."""
    parts = [plugin_class(name).api() for name in ("llm", *SERVICE_PLUGINS)]
    document = openapi.build_document(parts)
    paths = set(document["paths"])
    assert "/api/llm/v1/chat/completions" in paths
    assert {"/api/jobs", "/api/transfer", "/api/admin/keys", "/api/state", "/healthz"} <= paths
    for gone in ("/api/mcp/", "/api/docling/", "/api/asr/", "/.well-known/"):
        assert not [path for path in paths if path.startswith(gone)], gone
    assert [tag["name"] for tag in document["tags"]] == [
        *("llm", "jobs", "transfer", "admin"),
        *("server", "state", "agents", "docs"),
    ]
    assert "JsonRpcMessage" not in document["components"]["schemas"]
    assert not [name for name in document["components"]["responses"] if "JsonRpc" in name]
