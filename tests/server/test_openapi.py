"""The OpenAPI table's own consistency (the e2e test compares it with the app's routes)."""

from __future__ import annotations

import re

import pytest

from nfrx.server import openapi


def test_operation_ids_are_unique_and_path_parameters_declared() -> None:
    document = openapi.build_document()
    ids = []
    for path, item in document["paths"].items():
        for operation in item.values():
            ids.append(operation["operationId"])
            declared = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", path)), path
    assert len(ids) == len(set(ids))


def test_error_responses_follow_the_route_style() -> None:
    document = openapi.build_document()
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
    document = openapi.build_document()
    schemes = document["components"]["securitySchemes"]
    for item in document["paths"].values():
        for operation in item.values():
            for requirement in operation["security"]:
                assert set(requirement) <= set(schemes)


def test_a_route_listed_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openapi, "ROUTES", (*openapi.ROUTES, openapi.ROUTES[0]))
    with pytest.raises(ValueError, match="listed twice"):
        openapi.build_document()
