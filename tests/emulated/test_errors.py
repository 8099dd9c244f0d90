"""Refusals in the spec's body shape, and unexpected failures that give nothing away."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import boto3
import pytest
from conversation_service import services
from conversation_service.models.domain import UserSecrets, UserSettings

from tests.emulated.support import LLM_KEY, SETTINGS, call_api, configure_user, create, save_settings
from tests.support.api_gateway import api_event


def test_no_settings(stack) -> None:
    response = create({})
    assert response.status == 400
    assert response.body["status"] == "error"
    assert response.body["msg_id"] == "CONFIGURATION$SETTINGS_NOT_FOUND"


def test_an_unknown_agent_in_the_settings_is_the_spec_error(stack) -> None:
    services.user_store().save_settings(
        UserSettings(user_id="user-1", agent="NopeAgent", llm_model="m"), UserSecrets(llm_api_key=LLM_KEY)
    )
    response = create({})
    assert response.status == 400
    assert response.body == {
        "status": "error",
        "message": "Agent specification not found",
        "msg_id": "CONFIGURATION$SETTINGS_NOT_FOUND",
    }


def test_settings_refuse_an_unknown_agent(stack) -> None:
    configure_user("user-1")
    response = save_settings({"agent": "NopeAgent"})
    assert (response.status, response.body["msg_id"]) == (400, "CONFIGURATION$SETTINGS_NOT_FOUND")
    assert response.body["message"].startswith("Agent specification not found")
    assert call_api(api_event("GET", SETTINGS)).body["agent"] == "CodeActAgent"
    assert save_settings({"agent": "ReadOnlyAgent"}).body["agent"] == "ReadOnlyAgent"


def test_no_llm_key(stack) -> None:
    assert save_settings({"llm_model": "anthropic/claude-sonnet-4"}).status == 200
    response = create({})
    assert (response.status, response.body["msg_id"]) == (400, "STATUS$ERROR_LLM_AUTHENTICATION")
    assert response.body["status"] == "error"


@pytest.fixture
def drop_table(stack) -> Iterator[Callable[[str], None]]:
    """Delete a table mid-test; put it back (same definition, empty) afterwards."""
    dynamodb = boto3.client("dynamodb")
    dropped: list[dict] = []

    def drop(name: str) -> None:
        dropped.append(dynamodb.describe_table(TableName=name)["Table"])
        dynamodb.delete_table(TableName=name)

    yield drop
    for table in dropped:
        request = {
            "TableName": table["TableName"],
            "AttributeDefinitions": table["AttributeDefinitions"],
            "KeySchema": table["KeySchema"],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if table.get("GlobalSecondaryIndexes"):
            request["GlobalSecondaryIndexes"] = [
                {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
                for index in table["GlobalSecondaryIndexes"]
            ]
        if table.get("StreamSpecification"):
            request["StreamSpecification"] = table["StreamSpecification"]
        dynamodb.create_table(**request)


def assert_opaque_500(response, *secrets: str) -> None:
    assert response.status == 500
    assert response.body == {"status": "error", "message": "Failed to start conversation", "msg_id": "STATUS$ERROR"}
    for leak in ("Traceback", "ResourceNotFound", "Exception", "dynamodb", "Table", *secrets):
        assert leak not in response.raw, leak


def test_an_unexpected_failure_is_500_without_internals(user, tables, drop_table) -> None:
    drop_table(tables["conversations"])
    assert_opaque_500(create({}), tables["conversations"], tables["users"])


def test_a_failure_before_any_rule_is_500_without_internals(user, tables, drop_table) -> None:
    drop_table(tables["users"])
    assert_opaque_500(create({}), tables["conversations"], tables["users"])


def test_errors_of_other_routes_do_not_claim_a_conversation_failed(user, tables, drop_table) -> None:
    drop_table(tables["users"])
    response = call_api(api_event("GET", SETTINGS))
    assert response.status == 500
    assert response.body["msg_id"] == "STATUS$ERROR"
    assert tables["users"] not in response.raw and "Traceback" not in response.raw
