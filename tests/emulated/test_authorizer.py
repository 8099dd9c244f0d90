"""The TOKEN authorizer maps `Bearer <key>` to a user; the API trusts only what it put on the context."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from conversation_service import services
from conversation_service.logic.identity import api_key_hash

from tests.emulated.support import SETTINGS, call_api, configure_user, create
from tests.support.api_gateway import FakeLambdaContext, api_event

API_KEY = "ohk_live_0123456789abcdef0123456789abcdef"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef/dev/POST/api/conversations"


def authorize(authorization: str | None) -> dict[str, Any]:
    from authorizer.app import lambda_handler

    event: dict[str, Any] = {"type": "TOKEN", "methodArn": METHOD_ARN}
    if authorization is not None:
        event["authorizationToken"] = authorization
    return lambda_handler(event, FakeLambdaContext())


@pytest.fixture
def saved_key(stack) -> str:
    services.user_store().save_api_key_hash(api_key_hash(API_KEY), "user-7", "2026-01-01T00:00:00Z")
    return API_KEY


def test_a_saved_key_is_allowed_with_its_user_on_the_context(saved_key: str) -> None:
    policy = authorize(f"Bearer {saved_key}")
    assert policy["principalId"] == "user-7"
    assert policy["context"] == {"user_id": "user-7"}
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "execute-api:Invoke"
    assert statement["Resource"] == ["arn:aws:execute-api:us-east-1:123456789012:abcdef/dev/*/*"]


def test_the_scheme_is_case_insensitive(saved_key: str) -> None:
    assert authorize(f"bearer {saved_key}")["principalId"] == "user-7"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer ",
        f"Basic {API_KEY}",
        API_KEY,
        "Bearer ohk_live_wrong",
        f"Bearer {API_KEY}x",
        f"Bearer {API_KEY[:-1]}",
        "Bearer " + "k" * 600,
    ],
)
def test_wrong_or_missing_keys_are_unauthorized(saved_key: str, authorization: str | None) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(authorization)


def test_a_revoked_key_is_unauthorized(saved_key: str, tables) -> None:
    boto3.client("dynamodb").update_item(
        TableName=tables["users"],
        Key={"pk": {"S": f"APIKEY#{api_key_hash(saved_key)}"}, "sk": {"S": "APIKEY"}},
        UpdateExpression="SET revoked = :yes",
        ExpressionAttributeValues={":yes": {"BOOL": True}},
    )
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorize(f"Bearer {saved_key}")


def test_only_the_hash_is_stored(saved_key: str, tables) -> None:
    items = boto3.client("dynamodb").scan(TableName=tables["users"])["Items"]
    assert saved_key not in str(items)


def test_the_authorized_user_is_the_one_the_api_acts_for(saved_key: str) -> None:
    configure_user("user-7")
    context = authorize(f"Bearer {saved_key}")["context"]
    event = api_event("POST", "/api/conversations", {}, user_id=None)
    event["requestContext"]["authorizer"] = {"principalId": "user-7", **context}
    created = call_api(event)
    assert created.status == 200, created.body
    assert (
        call_api(api_event("GET", f"/api/conversations/{created.body['conversation_id']}", user_id="user-7")).status
        == 200
    )
    assert (
        call_api(api_event("GET", f"/api/conversations/{created.body['conversation_id']}", user_id="user-1")).status
        == 404
    )


def test_the_api_without_authorizer_context_is_401(stack) -> None:
    for response in (create({}, user_id=None), call_api(api_event("GET", SETTINGS, user_id=None))):
        assert response.status == 401
        assert response.body == {
            "status": "error",
            "message": "Missing or invalid API key",
            "msg_id": "ERROR$UNAUTHORIZED",
        }


def test_the_local_stack_user_stands_in_only_when_configured(stack, service_env) -> None:
    service_env(LOCAL_USER_ID="local-user")
    configure_user("local-user")
    assert create({}, user_id=None).status == 200
