"""The generated OpenAPI document describes POST /api/conversations with the spec's ten fields."""

from __future__ import annotations

from typing import Any

from tests.emulated.test_create_request import SPEC_FIELDS


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def test_create_conversation_lists_all_ten_body_fields() -> None:
    from api.app import openapi_schema

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


def test_get_conversation_and_settings_are_documented() -> None:
    from api.app import openapi_schema

    paths = openapi_schema()["paths"]
    assert "get" in paths["/api/conversations/{conversation_id}"]
    assert {"get", "post"} <= set(paths["/api/settings"])
