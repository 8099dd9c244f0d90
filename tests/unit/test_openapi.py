"""The generated OpenAPI document describes POST /api/conversations with the spec's ten fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conversation_service.models.environment import ApiEnvironment

from tests.unit.test_create_request_model import SPEC_FIELDS


@pytest.fixture
def openapi_schema(monkeypatch: pytest.MonkeyPatch) -> Callable[[], dict[str, Any]]:
    """The API's generator, imported as scripts/openapi.py does: the routes, not AWS (placeholders
    satisfy the function's required variables)."""
    for name in ApiEnvironment.model_fields:
        monkeypatch.setenv(name, f"openapi-{name.lower()}")
    from api.app import openapi_schema

    return openapi_schema


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def test_create_conversation_lists_all_ten_body_fields(openapi_schema: Callable[[], dict[str, Any]]) -> None:
    document = openapi_schema()
    operation = document["paths"]["/api/conversations"]["post"]
    body = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["properties"]) == SPEC_FIELDS
    assert not body.get("required"), "every field is optional"
    assert body.get("additionalProperties") is False, "unknown fields are refused"
    response = resolve(document, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(response["properties"]) == {"status", "conversation_id", "conversation_status"}
    assert {"400", "409", "422", "429", "500"} <= set(operation["responses"])
    headers = {
        parameter["name"].lower() for parameter in operation.get("parameters", []) if parameter["in"] == "header"
    }
    assert "idempotency-key" in headers


def test_get_conversation_and_settings_are_documented(openapi_schema: Callable[[], dict[str, Any]]) -> None:
    paths = openapi_schema()["paths"]
    assert "get" in paths["/api/conversations/{conversation_id}"]
    assert {"get", "post"} <= set(paths["/api/settings"])
